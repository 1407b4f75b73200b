extension Dashboard {
    /// The hub-managed models section (`/ui/models.js`): the list with estimates, replicas and
    /// download progress, the add form and Remove; it uses app.js's `api`, `el` and `$`.
    static let modelsScript = #"""
        "use strict";
        function downloaded(d) {
          const mib = (bytes) => (bytes / 1048576).toFixed(1);
          const done = d.total ? Math.floor(d.bytes / d.total * 100) + " % of " + mib(d.total) + " MiB" : mib(d.bytes) + " MiB";
          return done + (d.bytes_per_second ? " · " + mib(d.bytes_per_second) + " MiB/s" : "");
        }

        async function refreshModels() {
          if (!token()) return;
          let list;
          try { list = await api("GET", "/admin/models"); } catch (error) { return; }
          const rows = list.models.map((model) => {
            const replicas = model.placement.map((replica) => el("div", { class: "replica", "data-worker": replica.worker },
              el("b", {}, replica.worker), " ", el("span", { class: "state " + (replica.state || "pending") }, replica.state || "pending"),
              replica.download ? " " + downloaded(replica.download) : "",
              el("div", { class: "muted reason" }, (replica.download && replica.download.error) || replica.reason)));
            const estimate = model.estimate;
            return el("tr", { "data-model": model.name },
              el("td", {}, model.name, model.aliases.length ? el("div", { class: "muted" }, model.aliases.join(", ")) : null),
              el("td", { class: "source" }, model.source),
              el("td", {}, (model.size_bytes / 1048576).toFixed(1) + " MiB"),
              el("td", { class: "estimate" }, estimate ? estimate.total_mib + " MiB" : "–", estimate ? el("div", { class: "muted" },
                "weights " + estimate.weights_mib + " · KV " + estimate.kv_cache_mib + " (" + estimate.kv_tokens + " tokens) · compute " + estimate.compute_mib) : null),
              el("td", { class: "replicas" }, model.placement.length + " / " + model.replicas, ...replicas,
                model.problem ? el("div", { class: "error problem" }, model.problem) : null),
              el("td", {}, el("button", { class: "action", "data-action": "remove-model", onclick: async (event) => {
                event.target.disabled = true;
                try { await api("DELETE", "/admin/models/" + encodeURIComponent(model.name)); refreshModels(); }
                catch (error) { $("model-error").textContent = error.message; event.target.disabled = false; }
              } }, "Remove")));
          });
          $("models").tBodies[0].replaceChildren(...(rows.length ? rows
            : [el("tr", {}, el("td", { class: "muted", colSpan: 6 }, "None yet: add one below, or with caravan-hub models add."))]));
        }

        document.addEventListener("DOMContentLoaded", () => {
          $("model-form").addEventListener("submit", async (event) => {
            event.preventDefault();
            const number = (id) => ($(id).value ? Number($(id).value) : undefined);
            const body = { name: $("model-name").value.trim(), source: $("model-source").value.trim(), replicas: number("model-replicas"),
              ctx: number("model-ctx"), parallel: number("model-parallel") };
            $("model-add").disabled = true;
            $("model-error").textContent = "";
            try { await api("POST", "/admin/models", body); $("model-form").reset(); }
            catch (error) { $("model-error").textContent = error.message; }
            $("model-add").disabled = false;
            refreshModels();
          });
        });
        """#
}
