extension Dashboard {
    static let style = """
        :root { --bg: #0f1419; --panel: #182029; --line: #2a3541; --text: #dce3ea; --muted: #8a98a8; --ok: #3fb950; --warn: #d29922; --bad: #f85149; --accent: #58a6ff; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); }
        body > header { display: flex; align-items: center; gap: 1rem; padding: .6rem 1.2rem; border-bottom: 1px solid var(--line); }
        h1 { font-size: 1.2rem; margin: 0; } h2 { font-size: 1rem; margin: 1rem 0 .5rem; } h3 { margin: 0; font-size: 1rem; }
        .status { padding: .1rem .5rem; border-radius: 1rem; background: var(--line); } .status.ok { background: #1f4d2b; } .status.bad { background: #5a1e1e; }
        #logout { margin-left: auto; }
        #login { max-width: 24rem; margin: 4rem auto; } #login label { display: block; margin-bottom: .4rem; }
        input { width: 100%; padding: .5rem; background: var(--panel); border: 1px solid var(--line); color: var(--text); border-radius: 4px; }
        button { background: var(--panel); color: var(--text); border: 1px solid var(--line); border-radius: 4px; padding: .25rem .6rem; cursor: pointer; }
        button:hover { border-color: var(--accent); } #login-button { margin-top: .6rem; }
        main { display: grid; grid-template-columns: 1fr 20rem; gap: 1.2rem; padding: 0 1.2rem 1.2rem; }
        .worker { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .8rem; margin-bottom: 1rem; }
        .worker.draining { border-color: var(--warn); }
        .worker > header { display: flex; align-items: center; gap: .8rem; flex-wrap: wrap; margin-bottom: .5rem; }
        .badge { background: var(--warn); color: #000; border-radius: 1rem; padding: 0 .5rem; font-size: .8rem; }
        .gpus { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: .4rem; margin-bottom: .5rem; }
        .gpu { display: grid; grid-template-columns: auto 1fr auto; gap: .5rem; align-items: center; }
        .bar { height: .6rem; background: var(--line); border-radius: 3px; overflow: hidden; } .fill { height: 100%; background: var(--accent); }
        table { width: 100%; border-collapse: collapse; } th, td { text-align: left; padding: .3rem .4rem; border-top: 1px solid var(--line); vertical-align: top; }
        th { color: var(--muted); font-weight: normal; }
        .state.ready, .breaker.closed { color: var(--ok); } .state.loading, .state.draining, .breaker.half-open { color: var(--warn); }
        .state.failed, .breaker.open { color: var(--bad); } .state.downloading { color: var(--warn); }
        .inline-form { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin: .6rem 0 1rem; }
        .inline-form input[type=number] { width: 6rem; } .replica { margin-top: .3rem; } .source { word-break: break-all; }
        .metric { display: inline-flex; align-items: center; gap: .3rem; white-space: nowrap; }
        .spark { width: 60px; height: 16px; } .spark polyline { fill: none; stroke: var(--accent); stroke-width: 1; }
        .muted { color: var(--muted); } .reason { font-size: .8rem; max-width: 30rem; } .error { color: var(--bad); }
        .actions button { margin: 0 .2rem .2rem 0; }
        .budget { display: grid; grid-template-columns: 6rem auto; gap: .4rem; align-items: center; } .fill.spent { background: var(--bad); }
        .key-status.active { color: var(--ok); } .key-status.revoked, .key-status.expired { color: var(--bad); }
        ul { list-style: none; padding: 0; margin: 0; } #events li { padding: .3rem 0; border-top: 1px solid var(--line); }
        .event.breaker b, .event.engine_crash b, .event.action_failed b, .event.download_failed b { color: var(--bad); }
        #logs { position: fixed; inset: auto 1rem 1rem 1rem; height: 40vh; background: #0b0f13; border: 1px solid var(--line); border-radius: 6px; display: flex; flex-direction: column; }
        #logs[hidden] { display: none; }
        #logs header { display: flex; justify-content: space-between; align-items: center; padding: 0 .8rem; }
        #logs pre { flex: 1; margin: 0; padding: .5rem .8rem; overflow: auto; font-size: 12px; }
        @media (max-width: 900px) { main { grid-template-columns: 1fr; } }
        """
}
