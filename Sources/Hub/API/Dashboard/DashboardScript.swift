extension Dashboard {
    static let script = #"""
        "use strict";
        const KEY = "caravan.token";
        const HISTORY = 60;
        const history = new Map(); // "worker/model" -> {rps:[], ttft:[], tps:[]}
        let stream = null;
        let logStream = null;

        const $ = (id) => document.getElementById(id);
        function el(tag, attrs, ...children) {
          const node = document.createElement(tag);
          for (const [k, v] of Object.entries(attrs || {})) {
            if (k === "class") node.className = v;
            else if (k.startsWith("data-")) node.setAttribute(k, v);
            else node[k] = v;
          }
          for (const child of children) {
            if (child === null || child === undefined) continue;
            node.append(child instanceof Node ? child : document.createTextNode(String(child)));
          }
          return node;
        }
        function token() { return sessionStorage.getItem(KEY); }
        function authHeaders() { return { "Authorization": "Bearer " + token() }; }
        function setStatus(text, ok) { const s = $("status"); s.textContent = text; s.className = "status " + (ok ? "ok" : "bad"); }

        async function api(method, path, body) {
          const headers = authHeaders();
          if (body !== undefined) headers["Content-Type"] = "application/json";
          const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
          let answer = null;
          try { answer = await response.json(); } catch (e) { /* not JSON */ }
          if (!response.ok) throw new Error((answer && answer.error && answer.error.message) || ("HTTP " + response.status));
          return answer;
        }

        async function signIn(value) {
          sessionStorage.setItem(KEY, value);
          try {
            await api("GET", "/admin/workers");
          } catch (error) {
            sessionStorage.removeItem(KEY);
            $("login-error").textContent = "Sign-in failed: " + error.message;
            return;
          }
          $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
          $("login-error").textContent = "";
          connect();
          refreshUsage();
          refreshModels();
          if (!usageTimer) usageTimer = setInterval(() => { refreshUsage(); refreshModels(); }, 5000);
        }

        // Keys and this month's usage (UTC), from the ledger; every 5 s while signed in.
        let usageTimer = null;
        async function refreshUsage() {
          if (!token()) return;
          const now = new Date();
          const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
          let keys, byKey, byModel;
          try {
            [keys, byKey, byModel] = await Promise.all([api("GET", "/admin/keys"),
              api("GET", "/admin/usage?group_by=key&from=" + encodeURIComponent(from)),
              api("GET", "/admin/usage?group_by=model&from=" + encodeURIComponent(from))]);
          } catch (error) { return; }
          $("usage-period").textContent = "since " + from.slice(0, 10);
          const used = new Map(byKey.usage.map((line) => [line.key, line]));
          const rows = keys.keys.map((key) => {
            const line = used.get("key:" + key.name) || { requests: 0, total_tokens: 0 };
            used.delete("key:" + key.name);
            const limits = [key.rpm && key.rpm + " rpm", key.tpm && key.tpm + " tpm", key.parallel && key.parallel + " at once"].filter(Boolean).join(" · ");
            let budget = "–";
            if (key.budget_tokens) {
              const share = Math.min(1, (key.budget_spent || 0) / key.budget_tokens);
              const bar = el("div", { class: "bar" }, el("div", { class: "fill" + (share >= 1 ? " spent" : "") }));
              bar.firstChild.style.width = (share * 100).toFixed(1) + "%";
              budget = el("div", { class: "budget" }, bar, el("span", { class: "muted" }, (key.budget_spent || 0) + " / " + key.budget + " " + key.budget_mode));
            }
            return el("tr", { "data-key": key.name, "data-status": key.status },
              el("td", {}, key.name, el("div", { class: "muted" }, key.id)), el("td", { class: "key-status " + key.status }, key.status),
              el("td", {}, key.models ? key.models.join(", ") : "all"), el("td", {}, limits || "–"),
              el("td", { class: "requests" }, line.requests), el("td", { class: "tokens" }, line.total_tokens), el("td", {}, budget),
              el("td", {}, key.status === "active"
                ? actionButton("Revoke", "revoke", key.name, null, "/admin/keys/" + encodeURIComponent(key.id) + "/revoke", refreshUsage) : null));
          });
          // Credentials the store does not manage (tokens, configured keys) still have usage.
          for (const [subject, line] of used) {
            rows.push(el("tr", { "data-key": subject }, el("td", {}, subject), el("td", { class: "muted" }, "not managed"), el("td", {}, "–"),
              el("td", {}, "–"), el("td", { class: "requests" }, line.requests), el("td", { class: "tokens" }, line.total_tokens), el("td", {}, "–"), el("td", {})));
          }
          $("keys").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "muted", colSpan: 8 }, "No keys or usage yet."))]));
          $("model-usage").tBodies[0].replaceChildren(...byModel.usage.map((line) => el("tr", { "data-model": line.model },
            el("td", {}, line.model || "(none)"), el("td", {}, line.requests), el("td", {}, line.errors), el("td", {}, line.prompt_tokens),
            el("td", {}, line.completion_tokens), el("td", {}, line.cached_tokens))));
        }

        function signOut() {
          sessionStorage.removeItem(KEY);
          if (stream) stream.abort();
          if (logStream) logStream.abort();
          if (usageTimer) { clearInterval(usageTimer); usageTimer = null; }
          $("main").hidden = true; $("logs").hidden = true; $("login").hidden = false; $("logout").hidden = true;
          setStatus("signed out", false);
        }

        // Server-sent events over fetch (EventSource cannot send an Authorization header).
        async function readEvents(path, controller, onEvent) {
          const response = await fetch(path, { headers: authHeaders(), signal: controller.signal });
          if (!response.ok) throw new Error("HTTP " + response.status);
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            buffer += decoder.decode(value, { stream: true });
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const frame = buffer.slice(0, end); buffer = buffer.slice(end + 2);
              let type = "message"; const data = [];
              for (const line of frame.split("\n")) {
                if (line.startsWith("event: ")) type = line.slice(7);
                else if (line.startsWith("data: ")) data.push(line.slice(6));
              }
              if (data.length) onEvent(type, data.join("\n"));
            }
          }
        }

        async function connect() {
          if (stream) stream.abort();
          const controller = new AbortController();
          stream = controller;
          try {
            setStatus("live", true);
            await readEvents("/admin/events", controller, (type, data) => {
              const event = JSON.parse(data);
              if (type === "snapshot") renderSnapshot(event); else addEvent(event);
            });
          } catch (error) {
            if (controller.signal.aborted) return;
          }
          if (stream !== controller || !token()) return;
          setStatus("reconnecting", false);
          setTimeout(connect, 2000);
        }

        function remember(key, rates) {
          const h = history.get(key) || { rps: [], ttft: [], tps: [] };
          h.rps.push(rates ? rates.requests_per_second : 0);
          h.tps.push(rates ? rates.tokens_per_second : 0);
          h.ttft.push(rates && rates.ttft_p50_ms != null ? rates.ttft_p50_ms : null);
          for (const list of [h.rps, h.tps, h.ttft]) while (list.length > HISTORY) list.shift();
          history.set(key, h);
          return h;
        }

        function sparkline(values, label) {
          const ns = "http://www.w3.org/2000/svg";
          const svg = document.createElementNS(ns, "svg");
          svg.setAttribute("viewBox", "0 0 60 16"); svg.setAttribute("class", "spark");
          const numbers = values.map((v) => (v === null ? 0 : v));
          const max = Math.max(1e-9, ...numbers);
          // Newest point at the right edge; history grows in from the right.
          const offset = HISTORY - numbers.length;
          const points = numbers.map((v, i) => ((offset + i) * 60 / (HISTORY - 1)).toFixed(1) + "," + (15 - v / max * 14).toFixed(1));
          const line = document.createElementNS(ns, "polyline");
          line.setAttribute("points", points.join(" "));
          svg.append(line);
          const last = values.length ? values[values.length - 1] : null;
          return el("span", { class: "metric", title: label }, svg, el("span", {}, last === null ? "–" : (Math.round(last * 10) / 10) + " " + label));
        }

        function actionButton(label, action, worker, model, path, after) {
          return el("button", {
            class: "action", "data-action": action, "data-worker": worker, "data-model": model || "",
            onclick: async (event) => {
              event.target.disabled = true;
              try {
                await api("POST", path); addEvent({ type: "action", worker, model, to: action, time: new Date().toISOString() });
                if (after) after();
              }
              catch (error) { addEvent({ type: "action_failed", worker, model, reason: action + ": " + error.message, time: new Date().toISOString() }); }
              event.target.disabled = false;
            },
          }, label);
        }

        // The page is redrawn on every snapshot; a button held down is not redrawn under the
        // pointer (its click would be lost): the snapshot waits for the release.
        let holding = false;
        let pending = null;
        document.addEventListener("pointerdown", (event) => { if (event.target.closest("button")) holding = true; });
        document.addEventListener("pointerup", () => setTimeout(() => {
          holding = false;
          if (pending) { const next = pending; pending = null; renderSnapshot(next); }
        }, 0));

        function renderSnapshot(snapshot) {
          if (holding) { pending = snapshot; return; }
          const container = $("workers");
          const cards = [];
          for (const worker of snapshot.workers) {
            const w = encodeURIComponent(worker.name);
            const gpus = el("div", { class: "gpus" });
            for (const gpu of worker.gpus) {
              const used = gpu.memory_total_mb - gpu.memory_free_mb;
              const bar = el("div", { class: "bar" }, el("div", { class: "fill" }));
              bar.firstChild.style.width = (gpu.memory_total_mb ? used / gpu.memory_total_mb * 100 : 0).toFixed(1) + "%";
              gpus.append(el("div", { class: "gpu" }, el("span", {}, "GPU " + gpu.index + " " + gpu.name), bar,
                el("span", { class: "muted" }, used + " / " + gpu.memory_total_mb + " MiB")));
            }
            const rows = el("tbody");
            for (const model of worker.models) {
              const m = encodeURIComponent(model.name);
              const h = remember(worker.name + "/" + model.name, snapshot.rates[worker.name + "/" + model.name]);
              rows.append(el("tr", { "data-model": model.name },
                el("td", {}, model.name),
                el("td", { class: "state " + model.state }, model.state + (model.download ? " " + downloaded(model.download) : ""),
                model.reason ? el("div", { class: "muted reason" }, model.reason) : null),
                el("td", {}, model.slots_busy + " / " + model.slots_total),
                el("td", { class: "breaker " + model.breaker }, model.breaker),
                el("td", {}, sparkline(h.rps, "req/s")),
                el("td", {}, sparkline(h.ttft, "ms TTFT")),
                el("td", {}, sparkline(h.tps, "tok/s")),
                el("td", { class: "cache" }, model.cache_reuse == null ? "–" : Math.round(model.cache_reuse * 100) + " %",
                  model.prompt_caches ? el("div", { class: "muted saved-caches" }, model.prompt_caches + " saved · " +
                    (model.prompt_cache_bytes / 1048576).toFixed(1) + " MiB · " + (model.prompt_cache_restored || 0) + " restored") : null),
                el("td", { class: "actions" },
                  actionButton("Load", "load", worker.name, model.name, "/admin/workers/" + w + "/models/" + m + "/load"),
                  actionButton("Unload", "unload", worker.name, model.name, "/admin/workers/" + w + "/models/" + m + "/unload"),
                  model.state === "failed" ? actionButton("Reset", "reset", worker.name, model.name, "/admin/workers/" + w + "/models/" + m + "/reset") : null,
                  el("button", { class: "action", "data-action": "logs", onclick: () => openLogs(worker.name, model.name) }, "Logs"))));
            }
            const table = el("table", {}, el("thead", {}, el("tr", {}, ...["Model", "State", "Slots", "Breaker", "Requests", "TTFT p50", "Tokens", "Cache reuse", ""].map((t) => el("th", {}, t)))), rows);
            cards.push(el("article", { class: "worker" + (worker.draining ? " draining" : ""), "data-worker": worker.name },
              el("header", {},
                el("h3", {}, worker.name),
                el("span", { class: "muted" }, worker.url + " · v" + worker.version + " · heartbeat " + (worker.heartbeat_age_ms / 1000).toFixed(1) + " s ago · " + worker.in_flight + " in flight"),
                worker.draining ? el("span", { class: "badge" }, "draining") : null,
                worker.draining
                  ? actionButton("Undrain", "undrain", worker.name, null, "/admin/workers/" + w + "/undrain")
                  : actionButton("Drain", "drain", worker.name, null, "/admin/workers/" + w + "/drain")),
              gpus, table));
          }
          if (!cards.length) cards.push(el("p", { class: "muted" }, "No live workers."));
          container.replaceChildren(...cards);
          const queues = Object.entries(snapshot.queued || {});
          $("queues").replaceChildren(...(queues.length ? queues.map(([model, n]) => el("li", {}, model + ": " + n + " waiting")) : [el("li", { class: "muted" }, "empty")]));
          const held = snapshot.poison_throttled || 0;
          $("poison").textContent = held ? held + (held === 1 ? " client" : " clients") + " held back (429) for requests that fail on every worker" : "none";
          $("poison").className = held ? "" : "muted";
        }

        function addEvent(event) {
          const list = $("events");
          const time = event.time ? new Date(event.time).toLocaleTimeString() : "";
          const what = [event.worker, event.model].filter(Boolean).join(" / ");
          const change = event.from || event.to ? (event.from || "") + " → " + (event.to || "") : "";
          list.prepend(el("li", { class: "event " + event.type }, el("span", { class: "muted" }, time + " "), el("b", {}, event.type), " " + what + " " + change,
            event.reason ? el("div", { class: "muted reason" }, event.reason) : null));
          while (list.children.length > 50) list.lastChild.remove();
        }

        async function openLogs(worker, model) {
          if (logStream) logStream.abort();
          const controller = new AbortController();
          logStream = controller;
          $("logs").hidden = false;
          $("logs-title").textContent = "Logs: " + worker + " / " + model;
          const text = $("logs-text");
          text.textContent = "";
          const path = "/admin/workers/" + encodeURIComponent(worker) + "/logs?model=" + encodeURIComponent(model) + "&lines=200&follow=true";
          try {
            await readEvents(path, controller, (_, line) => {
              text.append(line + "\n");
              if (text.childNodes.length > 2000) text.firstChild.remove();
              text.scrollTop = text.scrollHeight;
            });
          } catch (error) {
            if (!controller.signal.aborted) text.append("[" + error.message + "]\n");
          }
        }

        document.addEventListener("DOMContentLoaded", () => {
          $("login-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("token").value.trim()); });
          $("logout").addEventListener("click", signOut);
          $("logs-close").addEventListener("click", () => { if (logStream) logStream.abort(); $("logs").hidden = true; });
          if (token()) signIn(token());
        });
        """#
}
