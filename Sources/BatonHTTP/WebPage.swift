/// The live page at `/`: one self-contained HTML document (styles and script inline, no
/// external assets) that follows `/events` and redraws every app without a reload.
///
/// Each app shows its active node and epoch, then one row per node: role, backend, replication
/// (txid and lag), paused, and the node's last event; below, the changes the page saw while open
/// (newest first). At the bottom, the cluster's event history: the recent events of the
/// JetStream stream when the page opens (`event: history`), then each new one as it is stored
/// (`event: baton`), newest first. Elements carry `data-app` / `data-node` / `data-field` attributes, so tools and
/// tests can read the page.
enum WebPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Baton</title>
    <style>
    :root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --muted: #6e7781; }
    body { font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; padding: 12px; max-width: 960px; margin-inline: auto; }
    header { display: flex; flex-wrap: wrap; gap: 8px; align-items: baseline; justify-content: space-between; }
    h1 { font-size: 1.3em; margin: 0 0 8px; }
    #conn { font-size: .85em; color: var(--muted); }
    #conn.live { color: var(--ok); } #conn.down { color: var(--bad); }
    .app { border: 1px solid #8884; border-radius: 8px; padding: 10px 12px; margin: 12px 0; }
    .app h2 { font-size: 1.1em; margin: 0 0 6px; display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: baseline; }
    .app h2 .sum { font-size: .85em; font-weight: normal; }
    .none { color: var(--bad); font-weight: bold; }
    table { border-collapse: collapse; width: 100%; font-size: .9em; }
    th, td { text-align: left; padding: 4px 6px; border-top: 1px solid #8883; vertical-align: top; }
    th { color: var(--muted); font-weight: normal; }
    .role-active { color: var(--ok); font-weight: bold; }
    .role-fencing, .role-stopped { color: var(--bad); font-weight: bold; }
    .role-acquiring, .role-promoting, .role-demoting { color: var(--warn); font-weight: bold; }
    .ev { color: var(--muted); font-size: .85em; }
    ul.log { margin: 6px 0 0; padding-left: 18px; font-size: .85em; color: var(--muted); max-height: 9em; overflow: auto; }
    #history h2 { font-size: 1.1em; margin: 16px 0 4px; }
    #events { max-height: 24em; }
    #events .k { font-weight: bold; color: inherit; }
    @media (max-width: 600px) {
      table, tbody, tr, td { display: block; } thead { display: none; }
      tr { border-top: 1px solid #8884; padding: 4px 0; } td { border: 0; padding: 1px 0; }
      td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); }
    }
    </style>
    </head>
    <body>
    <header><h1>Baton <span id="cluster"></span></h1><span id="conn">connecting…</span></header>
    <main id="apps"><p class="ev">waiting for the cluster's status…</p></main>
    <section id="history"><h2>Event history</h2><p class="ev" id="history-note">loading the event history…</p><ul class="log" id="events"></ul></section>
    <script>
    "use strict";
    const logs = {};          // app -> [text], newest first, kept while the page is open
    let previous = {};        // app -> node -> "role epoch"
    function el(tag, attrs, ...children) {
      const e = document.createElement(tag);
      for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
      for (const c of children) e.append(c);
      return e;
    }
    function lagText(r) {
      if (!r) return "–";
      if (r.sync) return (r.sync.initial ? "initial sync " : "resync ") + r.sync.phase;
      let t = r.role + (r.txid != null ? " txid " + r.txid : "");
      if (r.role === "applying" && r.lag_transactions != null) {
        t += ", " + r.lag_transactions + " behind";
        if (r.lag_seconds) t += " (" + r.lag_seconds.toFixed(1) + " s)";
      }
      if (r.last_snapshot_time != null) t += ", snapshot " + Math.max(0, Math.round(Date.now() / 1000 - r.last_snapshot_time)) + " s ago";
      if (r.last_error) t += " (error: " + r.last_error + ")";
      return t;
    }
    function render(statuses) {
      const apps = {};
      let cluster = "";
      for (const s of statuses) {
        cluster = s.cluster;
        for (const a of s.apps) (apps[a.name] = apps[a.name] || []).push({ node: s.node, nats: s.nats_connected, app: a });
      }
      document.getElementById("cluster").textContent = cluster ? "· cluster " + cluster : "";
      const now = new Date().toLocaleTimeString();
      const main = document.getElementById("apps");
      main.replaceChildren();
      const names = Object.keys(apps).sort();
      if (names.length === 0) main.append(el("p", { class: "ev" }, "no node reports any app"));
      for (const name of names) {
        const reports = apps[name].sort((x, y) => x.node.localeCompare(y.node));
        const actives = reports.filter(r => r.app.role === "active");
        const epoch = Math.max(0, ...reports.map(r => r.app.token || 0));
        const before = previous[name] || {};
        const seen = {};
        for (const r of reports) {
          const key = r.app.role + " " + (r.app.token || "");
          seen[r.node] = key;
          if (before[r.node] !== undefined && before[r.node] !== key)
            (logs[name] = logs[name] || []).unshift(now + " " + r.node + ": " + r.app.role + (r.app.token ? " (epoch " + r.app.token + ")" : ""));
        }
        previous[name] = seen;
        const section = el("section", { class: "app", "data-app": name });
        const sum = el("span", { class: "sum" });
        sum.append("active: ", actives.length
          ? el("b", { "data-field": "active-node" }, actives.map(r => r.node).join(", "))
          : el("span", { class: "none", "data-field": "active-node" }, "none"));
        sum.append(" · epoch ", el("span", { "data-field": "epoch" }, epoch ? String(epoch) : "–"));
        section.append(el("h2", {}, el("span", {}, name), sum));
        const tbody = el("tbody");
        for (const r of reports) {
          const a = r.app;
          tbody.append(el("tr", { "data-node": r.node },
            el("td", { "data-label": "node" }, r.node + (r.nats ? "" : " (NATS down)")),
            el("td", { "data-label": "role", "data-field": "role", class: "role-" + a.role }, a.role + (a.paused ? " (paused)" : "")),
            el("td", { "data-label": "backend" }, a.backend_running ? "running" : "stopped"),
            el("td", { "data-label": "replica" }, lagText(a.replication)),
            el("td", { "data-label": "last event", class: "ev" }, a.last_event || "")));
        }
        section.append(el("table", {}, el("thead", {}, el("tr", {}, ...["node", "role", "backend", "replica", "last event"].map(h => el("th", {}, h)))), tbody));
        if (logs[name] && logs[name].length) section.append(el("ul", { class: "log" }, ...logs[name].slice(0, 20).map(t => el("li", {}, t))));
        main.append(section);
      }
    }
    const history = [];       // the cluster's events, newest first
    const seenEvents = new Set();
    function eventItem(e) {
      const when = new Date(e.time * 1000).toLocaleString();
      const li = el("li", { "data-kind": e.kind, "data-event-node": e.node, "data-event-app": e.app || "" });
      li.append(when + " " + e.node + (e.app ? " " + e.app : "") + " ", el("span", { class: "k" }, e.kind));
      if (e.epoch != null) li.append(" epoch " + e.epoch);
      if (e.handover) li.append(" · downtime " + e.handover.downtime_ms.toFixed(0) + " ms");
      if (e.detail) li.append(" · " + e.detail);
      return li;
    }
    function addEvents(list) {
      for (const e of list) {
        const key = JSON.stringify(e);
        if (seenEvents.has(key)) continue;
        seenEvents.add(key);
        history.push(e);
      }
      history.sort((x, y) => y.time - x.time);
      if (history.length > 200) history.length = 200;
      document.getElementById("events").replaceChildren(...history.map(eventItem));
    }
    const conn = document.getElementById("conn");
    const source = new EventSource("events");
    source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "live"; });
    source.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "down"; });
    source.addEventListener("status", (e) => {
      const data = JSON.parse(e.data);
      if (Array.isArray(data)) { render(data); conn.textContent = "live · " + new Date().toLocaleTimeString(); conn.className = "live"; }
      else { conn.textContent = data.error || "no status"; conn.className = "down"; }
    });
    source.addEventListener("history", (e) => {
      const data = JSON.parse(e.data);
      const note = document.getElementById("history-note");
      if (Array.isArray(data)) { note.textContent = data.length ? "" : "no events stored yet"; addEvents(data); }
      else note.textContent = data.error || "no event history";
    });
    source.addEventListener("baton", (e) => {
      document.getElementById("history-note").textContent = "";
      addEvents([JSON.parse(e.data)]);
    });
    </script>
    </body>
    </html>
    """#
}
