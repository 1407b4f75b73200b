extension Dashboard {
    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Caravan</title>
        <link rel="stylesheet" href="/ui/app.css">
        <script src="/ui/app.js" defer></script>
        <script src="/ui/models.js" defer></script>
        </head>
        <body>
        <header>
          <h1>Caravan</h1>
          <span id="status" class="status">signed out</span>
          <button id="logout" hidden>Sign out</button>
        </header>
        <section id="login">
          <form id="login-form">
            <label for="token">Admin token or API key</label>
            <input id="token" type="password" autocomplete="off" spellcheck="false">
            <button id="login-button" type="submit">Sign in</button>
            <p id="login-error" class="error"></p>
          </form>
        </section>
        <main id="main" hidden>
          <section>
            <h2>Workers</h2>
            <div id="workers"></div>
            <h2>Models from the hub</h2>
            <table id="models"><thead><tr><th>Model</th><th>Source</th><th>Size</th><th>VRAM estimate</th><th>Replicas</th><th></th></tr></thead><tbody></tbody></table>
            <form id="model-form" class="inline-form">
              <input id="model-name" placeholder="name" required spellcheck="false">
              <input id="model-source" placeholder="hf://ORG/REPO/FILE.gguf" required spellcheck="false" size="40">
              <input id="model-replicas" type="number" min="1" max="64" value="1" title="replicas">
              <input id="model-ctx" type="number" min="1" placeholder="ctx" title="context tokens per slot">
              <input id="model-parallel" type="number" min="1" placeholder="parallel" title="slots">
              <button id="model-add" type="submit">Add model</button>
              <span id="model-error" class="error"></span>
            </form>
            <h2>Keys and usage <span id="usage-period" class="muted"></span></h2>
            <table id="keys"><thead><tr><th>Key</th><th>Status</th><th>Models</th><th>Limits</th><th>Requests</th><th>Tokens</th><th>Budget</th><th></th></tr></thead><tbody></tbody></table>
            <h2>Usage by model</h2>
            <table id="model-usage"><thead><tr><th>Model</th><th>Requests</th><th>Errors</th><th>Prompt</th><th>Completion</th><th>Cached</th></tr></thead><tbody></tbody></table>
          </section>
          <section class="side">
            <h2>Queues</h2>
            <ul id="queues"><li class="muted">empty</li></ul>
            <h2>Poison requests</h2>
            <p id="poison" class="muted">none</p>
            <h2>Recent events</h2>
            <ul id="events"></ul>
          </section>
        </main>
        <section id="logs" hidden>
          <header><h2 id="logs-title">Logs</h2><button id="logs-close">Close</button></header>
          <pre id="logs-text"></pre>
        </section>
        </body>
        </html>
        """
}
