// OneMap wall display (first version): live list of alerts, pushed by server-sent events.
// All text is inserted with textContent, never as HTML: feed text comes from the public.
"use strict";
(function () {
  const LEVELS = { blue: "蓝色", yellow: "黄色", orange: "橙色", red: "红色", none: "无" };
  const TRANSITIONS = { new: "新增", escalated: "升级", "de-escalated": "降级", resolved: "解除" };

  function cell(tr, cls, text) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
  }

  function row(alert) {
    const h = alert.hazard, p = h.place, f = h.key_figure;
    const tr = document.createElement("tr");
    tr.className = "alert level-" + alert.level;
    tr.dataset.hazard = alert.hazard_id;
    cell(tr, "level", LEVELS[alert.level] || alert.level);
    cell(tr, "place", (p.district_name || "") + (p.town_name || "") + (p.village_name || ""));
    cell(tr, "source", h.source_name);
    cell(tr, "figure", f.name + " " + Number(f.value).toFixed(2) + f.unit);
    cell(tr, "reason", h.reason);
    cell(tr, "score", String(alert.score));
    cell(tr, "time", h.observed_at.substring(11, 16));
    return tr;
  }

  function render(state) {
    const tbody = document.getElementById("alert-rows");
    tbody.replaceChildren();
    if (state.alerts.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 7;
      td.textContent = "当前无预警";
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    state.alerts.forEach(function (a) { tbody.appendChild(row(a)); });
    const ticker = document.getElementById("ticker");
    ticker.replaceChildren();
    state.ticker.forEach(function (t) {
      const li = document.createElement("li");
      li.className = "level-" + t.level;
      li.textContent = t.issued_at.substring(11, 19) + " " + (TRANSITIONS[t.transition] || t.transition) +
        " " + t.hazard.source_name + " " + (LEVELS[t.level] || t.level);
      ticker.appendChild(li);
    });
    document.getElementById("count").textContent = String(state.alerts.length);
    document.getElementById("updated").textContent = state.updated_at || "—";
  }

  let refreshing = false;
  function refresh() {
    if (refreshing) return;
    refreshing = true;
    fetch("/api/state", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(render)
      .finally(function () { refreshing = false; });
  }

  function connect() {
    const conn = document.getElementById("conn");
    const source = new EventSource("/api/events");
    source.addEventListener("state", function (e) { render(JSON.parse(e.data)); conn.textContent = "实时"; });
    source.addEventListener("alert", function (e) { if (e.data !== "{}") refresh(); });
    source.onerror = function () { conn.textContent = "重连中"; };
  }
  connect();
})();
