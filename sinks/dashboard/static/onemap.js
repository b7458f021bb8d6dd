// OneMap wall display: the four-level map coloured by warning level, hazard markers (clustered),
// the top-K list with score breakdowns, the alert ticker, counts, feed health and drills.
//
// Data: one server-sent event stream (/api/events): "state" (full snapshot, on every connect)
// and "update" (marker changes, new ticker lines, fresh summary). Boundaries come from
// /api/boundaries/<level>. Everything is served by OneMap itself; nothing from the internet.
//
// Safety: every text that comes from a feed (incident descriptions come from the public) is
// inserted with textContent, never as HTML; Leaflet is only ever given DOM elements, not HTML
// strings. No inline script or style: the CSP forbids both.
"use strict";
(function () {
  const LABELS = ["none", "blue", "yellow", "orange", "red"];
  const LEVEL_ZH = { none: "无", blue: "蓝色", yellow: "黄色", orange: "橙色", red: "红色" };
  const LEVEL_SHORT = { none: "—", blue: "蓝", yellow: "黄", orange: "橙", red: "红" };
  const COLOURS = { blue: "#2f7bff", yellow: "#ffd21f", orange: "#ff8a00", red: "#ff2d2d" };
  const NEUTRAL = "#14213a";
  const TRANSITIONS = { new: "新增", escalated: "升级", "de-escalated": "降级", resolved: "解除",
                        updated: "更新" };
  const HAZARDS = { water_level: "水位", tide: "潮位", storm_surge: "风暴潮", rainstorm: "暴雨",
                    rainfall: "暴雨", waterlogging: "内涝", wind: "大风", typhoon: "台风",
                    geohazard: "地质灾害", landslide: "滑坡", collapse: "崩塌",
                    debris_flow: "泥石流", incident: "突发事件", fire: "火灾" };
  const BREAKDOWN = { level: "预警等级", exposure: "暴露人口", compound: "复合风险",
                      trend: "发展趋势", vulnerable: "脆弱对象", proximity: "邻近程度" };
  const TREND = { rising: "上升", steady: "平稳", falling: "下降" };
  const WEEKDAYS = ["日", "一", "二", "三", "四", "五", "六"];

  const wall = {
    map: null, homeZoom: 0, config: null, mode: "",
    layers: {}, paths: {}, labels: {}, areas: {}, villageCodes: new Set(),
    cluster: null, markers: new Map(), summary: null, tickerIds: new Set(),
    selected: null, lastEventAt: 0, stateCount: 0, updateCount: 0,
  };
  window.onemapWall = wall;  // read-only inspection for the browser tests and the console

  // -- small helpers -------------------------------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function rem() { return parseFloat(getComputedStyle(document.documentElement).fontSize) || 20; }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function hhmmss(d) { return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()); }
  function hhmm(d) { return pad(d.getHours()) + ":" + pad(d.getMinutes()); }
  function parseTime(s) { const d = s ? new Date(s) : null; return d && !isNaN(d) ? d : null; }
  function timeText(s, withSeconds) {
    const d = parseTime(s);
    return d ? (withSeconds ? hhmmss(d) : hhmm(d)) : "—";
  }
  function age(s) {
    const d = parseTime(s);
    if (!d) return "";
    const m = Math.floor((Date.now() - d.getTime()) / 60000);
    if (m < 1) return "刚刚";
    if (m < 60) return m + "分钟前";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "小时" + (m % 60 ? (m % 60) + "分" : "") + "前";
    return Math.floor(h / 24) + "天前";
  }
  function shortName(n) { return (n || "").replace(/(居民委员会|村民委员会|居委会|村委会)$/, ""); }
  function placeText(p) {
    if (!p) return "辖区外";
    const text = (p.district_name || "") + (p.town_name || "") + shortName(p.village_name);
    return text || "辖区外";
  }
  function number(v) {
    const n = Number(v);
    if (!isFinite(n)) return String(v);
    return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2);
  }
  function figureText(f) {
    if (!f) return "";
    return (f.name || "") + " " + number(f.value) + (f.unit || "");
  }
  function thresholdText(f) {
    if (!f || f.threshold === null || f.threshold === undefined) return "";
    return (f.threshold_name || "阈值") + " " + number(f.threshold) + (f.unit || "");
  }
  function hazardName(t) { return HAZARDS[t] || t || ""; }
  function what(h) {  // "暴雨 3小时降雨 85毫米", but not "水位 水位 3.2米"
    const name = hazardName(h.hazard_type), fig = figureText(h.key_figure);
    return fig.indexOf(name) === 0 ? fig : name + " " + fig;
  }
  function levelOf(alert) { return alert.level === "none" ? alert.previous_level : alert.level; }

  // -- clock ---------------------------------------------------------------------------------

  function tickClock() {
    const now = new Date();
    document.getElementById("clock-time").textContent = hhmmss(now);
    document.getElementById("clock-date").textContent = now.getFullYear() + "年" +
      (now.getMonth() + 1) + "月" + now.getDate() + "日 星期" + WEEKDAYS[now.getDay()];
  }

  // -- map -----------------------------------------------------------------------------------

  function initMap(config) {
    wall.config = config;
    const map = L.map("map", { zoomControl: false, attributionControl: false, zoomSnap: 0.25,
                               zoomDelta: 0.5, minZoom: 6, maxZoom: 17, preferCanvas: false,
                               fadeAnimation: false });
    wall.map = map;
    L.control.zoom({ position: "bottomright", zoomInTitle: "放大", zoomOutTitle: "缩小" }).addTo(map);
    if (config.tile_url) {
      L.tileLayer(config.tile_url, { attribution: "" }).addTo(map);
      if (config.tile_attribution) {
        const attribution = L.control.attribution({ prefix: false }).addTo(map);
        // addAttribution takes HTML: the configured text is stripped of markup characters
        attribution.addAttribution(String(config.tile_attribution).replace(/[<>&"']/g, ""));
      }
    }
    [["villages", 401], ["towns", 402], ["districts", 403], ["city", 404], ["labels", 450]]
      .forEach(function (p) { map.createPane(p[0]).classList.add("pane-" + p[0]); });
    fitHome();
    map.on("zoomend", applyMode);
    window.addEventListener("resize", function () { map.invalidateSize(); fitHome(); });

    wall.cluster = L.markerClusterGroup({
      chunkedLoading: true, chunkInterval: 100, showCoverageOnHover: false,
      spiderfyOnMaxZoom: true, maxClusterRadius: function () { return 3 * rem(); },
      removeOutsideVisibleBounds: true, iconCreateFunction: clusterIcon,
    });
    wall.cluster.on("click", function (e) { select(e.layer.options.hazardId); });
    map.addLayer(wall.cluster);

    const order = ["village", "town", "district", "city"];
    return Promise.all(order.map(function (level) {
      return fetch("/api/boundaries/" + level, { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("boundaries " + level + ": " + r.status); return r.json(); })
        .then(function (fc) { addBoundaries(level, fc); });
    })).then(function () { applyMode(); legend(); });
  }

  function fitHome() {
    const b = wall.config.bounds;
    wall.map.fitBounds(b, { padding: [rem(), rem()], animate: false });
    wall.homeZoom = wall.map.getZoom();
  }

  const PANE = { village: "villages", town: "towns", district: "districts", city: "city" };

  function addBoundaries(level, fc) {
    const paths = {};
    const layer = L.geoJSON(fc, {
      pane: PANE[level], interactive: false, smoothFactor: 0.5,
      style: function () { return { stroke: true, weight: 1, color: "#2b3d5e", fill: true, fillColor: NEUTRAL, fillOpacity: 0 }; },
      onEachFeature: function (feature, path) {
        paths[feature.properties.code] = path;
        path.feature = feature;
      },
    }).addTo(wall.map);
    Object.keys(paths).forEach(function (code) {
      const e = paths[code].getElement && paths[code].getElement();
      if (e) { e.setAttribute("data-code", code); e.setAttribute("data-admin", level); }
    });
    if (level === "village") Object.keys(paths).forEach(function (c) { wall.villageCodes.add(c); });
    wall.layers[level] = layer;
    wall.paths[level] = paths;
    if (level !== "city") {
      const labels = L.layerGroup();
      fc.features.forEach(function (f) {
        const p = f.properties;
        const box = el("span", "area-label-text", level === "village" ? shortName(p.short_name || p.name) : (p.short_name || p.name));
        labels.addLayer(L.marker([p.label[1], p.label[0]], {
          pane: "labels", interactive: false, keyboard: false,
          icon: L.divIcon({ className: "area-label area-label-" + level, html: box, iconSize: null }),
        }));
      });
      wall.labels[level] = labels;
    }
  }

  // Which level is filled at the current zoom: districts at the city view, towns one zoom
  // step in, villages two steps in (relative to the zoom that fits the city on this screen).
  function currentMode() {
    const d = wall.map.getZoom() - wall.homeZoom;
    return d < 0.75 ? "district" : d < 1.75 ? "town" : "village";
  }

  function applyMode() {
    if (!wall.layers.village) return;
    const mode = currentMode();
    if (mode !== wall.mode) {
      wall.mode = mode;
      ["district", "town", "village"].forEach(function (lv) {
        const labels = wall.labels[lv];
        if (!labels) return;
        if (lv === mode) labels.addTo(wall.map); else labels.remove();
      });
      document.getElementById("zoomhint").textContent =
        { district: "显示：区", town: "显示：镇街", village: "显示：村居" }[mode];
    }
    paintAreas();
  }

  function outline(level, mode) {
    const depth = { city: 0, district: 1, town: 2, village: 3 };
    const d = depth[level] - depth[mode];
    if (level === "city") return { color: "#5fd3ff", weight: 0.15 * rem(), opacity: 0.9 };
    if (d > 0) return { color: "#24344f", weight: 0.5, opacity: d === 1 ? 0.45 : 0 };
    if (d === 0) return { color: "#30466b", weight: 1, opacity: 0.9 };
    return { color: "#8fb4e8", weight: 0.1 * rem(), opacity: 0.85 };  // coarser: bold outline
  }

  function paintAreas() {
    const mode = wall.mode || "district";
    ["city", "district", "town", "village"].forEach(function (level) {
      const paths = wall.paths[level];
      if (!paths) return;
      const line = outline(level, mode);
      Object.keys(paths).forEach(function (code) {
        const label = wall.areas[code] || "none";
        const filled = level === mode;
        const style = {
          color: line.color, weight: line.weight, opacity: line.opacity,
          fillColor: label === "none" ? NEUTRAL : COLOURS[label],
          fillOpacity: filled ? (label === "none" ? 0.9 : 0.62) : (level === "city" ? 0 : 0),
        };
        paths[code].setStyle(style);
        const e = paths[code].getElement && paths[code].getElement();
        if (e) { e.setAttribute("data-level", label); e.setAttribute("data-filled", filled ? "1" : "0"); }
      });
    });
  }

  function legend() {
    const box = document.getElementById("legend");
    box.replaceChildren();
    ["red", "orange", "yellow", "blue", "none"].forEach(function (lv) {
      const item = el("span", "legend-item");
      item.appendChild(el("i", "swatch level-" + lv));
      item.appendChild(el("span", "", lv === "none" ? "无预警" : LEVEL_ZH[lv] + "预警"));
      box.appendChild(item);
    });
  }

  // -- markers -------------------------------------------------------------------------------

  const icons = {};
  function markerIcon(level, type) {
    const key = level + "/" + type;
    if (!icons[key]) {
      const size = Math.round((level >= 4 ? 1.05 : 0.85) * rem());
      icons[key] = L.divIcon({ className: "hz level-" + LABELS[level] + " hz-" + type,
                               html: "", iconSize: [size, size] });
    }
    return icons[key];
  }

  function clusterIcon(cluster) {
    let max = 0;
    const children = cluster.getAllChildMarkers();
    for (let i = 0; i < children.length && max < 4; i++) {
      if (children[i].options.level > max) max = children[i].options.level;
    }
    const n = cluster.getChildCount();
    const size = Math.round((1.6 + Math.min(1.6, Math.log10(n) * 0.6)) * rem());
    const box = el("div", "cluster-inner", n >= 10000 ? Math.round(n / 1000) + "k" : n);
    return L.divIcon({ className: "cluster level-" + LABELS[max], html: box, iconSize: [size, size] });
  }

  function makeMarker(m) {
    // m = [hazard_id, lon, lat, level 0-4, hazard_type, score]
    return L.marker([m[2], m[1]], { icon: markerIcon(m[3], m[4]), hazardId: m[0], level: m[3],
                                   hazardType: m[4],
                                   keyboard: false, riseOnHover: true,
                                   zIndexOffset: m[3] * 1000 });
  }

  function setMarkers(list) {
    wall.cluster.clearLayers();
    wall.markers = new Map();
    const layers = list.map(function (m) { const mk = makeMarker(m); wall.markers.set(m[0], mk); return mk; });
    wall.cluster.addLayers(layers);
  }

  function changeMarkers(delta) {
    const gone = [];
    const added = [];
    delta.remove.forEach(function (id) {
      const mk = wall.markers.get(id);
      if (mk) { gone.push(mk); wall.markers.delete(id); }
    });
    delta.upsert.forEach(function (m) {
      const old = wall.markers.get(m[0]);
      if (old) gone.push(old);
      const mk = makeMarker(m);
      wall.markers.set(m[0], mk);
      added.push(mk);
    });
    if (gone.length) wall.cluster.removeLayers(gone);
    if (added.length) wall.cluster.addLayers(added);
  }

  // -- panels --------------------------------------------------------------------------------

  function renderKpis(s) {
    const box = document.getElementById("kpis");
    box.replaceChildren();
    ["red", "orange", "yellow", "blue"].forEach(function (lv) {
      const k = el("div", "kpi level-" + lv);
      k.appendChild(el("b", "kpi-num", s.levels[lv] || 0));
      k.appendChild(el("span", "kpi-name", LEVEL_ZH[lv] + "预警"));
      box.appendChild(k);
    });
    let villages = 0;
    Object.keys(s.areas).forEach(function (c) { if (wall.villageCodes.has(c)) villages++; });
    const total = el("div", "kpi-total");
    total.appendChild(el("span", "", "在办风险 "));
    total.appendChild(el("b", "", s.open_total));
    total.appendChild(el("span", "", " 处 · 涉及村居 "));
    total.appendChild(el("b", "", villages));
    total.appendChild(el("span", "", " 个"));
    box.appendChild(total);
  }

  function renderDistricts(s) {
    const body = document.getElementById("district-rows");
    body.replaceChildren();
    s.districts.forEach(function (d) {
      const tr = el("tr");
      const lv = s.areas[d.code] || "none";
      const name = el("td", "d-name");
      name.appendChild(el("i", "swatch level-" + lv));
      name.appendChild(document.createTextNode(d.name));
      tr.appendChild(name);
      let total = 0;
      ["red", "orange", "yellow", "blue"].forEach(function (c) {
        const n = d.counts[c] || 0;
        total += n;
        tr.appendChild(el("td", "num" + (n ? " c-" + c : " zero"), n));
      });
      tr.appendChild(el("td", "num total", total));
      body.appendChild(tr);
    });
  }

  function renderFeeds(s) {
    const list = document.getElementById("feeds");
    list.replaceChildren();
    s.feeds.forEach(function (f) {
      const li = el("li", "feed");
      let state = "unknown", stateText = "无心跳";
      if (f.silent === true) { state = "silent"; stateText = "静默"; }
      else if (f.silent === false) { state = "ok"; stateText = "正常"; }
      li.classList.add("feed-" + state);
      li.appendChild(el("i", "dot"));
      li.appendChild(el("span", "feed-name", f.name));
      li.appendChild(el("span", "feed-state", stateText));
      const last = f.health && f.health.last_record_at ? "数据 " + timeText(f.health.last_record_at, true)
        : f.last_alert_at ? "预警 " + timeText(f.last_alert_at, false) : "暂无数据";
      li.appendChild(el("span", "feed-last", last));
      li.appendChild(el("span", "feed-open", f.open ? f.open + " 处" : ""));
      li.title = f.feed;
      list.appendChild(li);
    });
  }

  function topItem(a, rank) {
    const h = a.hazard;
    const li = el("li", "alert level-" + a.level);
    li.dataset.hazard = a.hazard_id;
    if (wall.selected === a.hazard_id) li.classList.add("selected");
    li.appendChild(el("span", "rank", rank));
    li.appendChild(el("span", "badge level-" + a.level, LEVEL_SHORT[a.level]));
    const main = el("span", "main");
    const line1 = el("span", "line1");
    line1.appendChild(el("span", "place", placeText(h.place)));
    line1.appendChild(el("span", "type", hazardName(h.hazard_type)));
    main.appendChild(line1);
    const line2 = el("span", "line2");
    line2.appendChild(el("span", "figure", figureText(h.key_figure)));
    line2.appendChild(el("span", "source", h.source_name));
    main.appendChild(line2);
    li.appendChild(main);
    const side = el("span", "side");
    side.appendChild(el("span", "score", number(a.score)));
    side.appendChild(el("span", "age", age(a.issued_at)));
    li.appendChild(side);
    li.addEventListener("click", function () { select(a.hazard_id); });
    return li;
  }

  function renderTop(s) {
    const list = document.getElementById("top-list");
    list.replaceChildren();
    if (!s.top.length) list.appendChild(el("li", "empty", "当前无预警"));
    s.top.forEach(function (a, i) { list.appendChild(topItem(a, i + 1)); });
    document.getElementById("open-total").textContent = String(s.open_total);
  }

  function renderTypes() {
    const counts = {};
    wall.markers.forEach(function (mk) {
      const t = mk.options.hazardType;
      const row = counts[t] || (counts[t] = [0, 0, 0, 0, 0]);
      row[mk.options.level]++;
    });
    const list = document.getElementById("types");
    list.replaceChildren();
    const types = Object.keys(counts).sort(function (a, b) {
      const ca = counts[a], cb = counts[b];
      return (cb[4] - ca[4]) || (cb[3] - ca[3]) || (sum(cb) - sum(ca));
    });
    if (!types.length) list.appendChild(el("li", "empty", "当前无预警"));
    const max = Math.max(1, ...types.map(function (t) { return sum(counts[t]); }));
    types.slice(0, 6).forEach(function (t) {
      const li = el("li", "type-row");
      li.appendChild(el("span", "type-name", hazardName(t)));
      const bar = el("span", "type-bar");
      [4, 3, 2, 1].forEach(function (lv) {
        if (!counts[t][lv]) return;
        const seg = el("i", "seg level-" + LABELS[lv]);
        seg.style.width = (counts[t][lv] / max) * 100 + "%";  // CSSOM, allowed by CSP
        bar.appendChild(seg);
      });
      li.appendChild(bar);
      li.appendChild(el("span", "type-num", sum(counts[t])));
      list.appendChild(li);
    });
  }
  function sum(a) { return a.reduce(function (x, y) { return x + y; }, 0); }

  function renderDrills(s) {
    const list = document.getElementById("drill-list");
    list.replaceChildren();
    document.getElementById("drill-count").textContent = String(s.drill_total);
    document.getElementById("drills").classList.toggle("has-drills", s.drill_total > 0);
    if (!s.drills.length) list.appendChild(el("li", "empty", "当前无演练"));
    s.drills.forEach(function (a) {
      const h = a.hazard;
      const li = el("li", "drill level-" + a.level);
      li.dataset.hazard = a.hazard_id;
      li.appendChild(el("span", "drill-tag", "【演练】"));
      li.appendChild(el("span", "badge level-" + a.level, LEVEL_SHORT[a.level]));
      li.appendChild(el("span", "place", placeText(h.place)));
      li.appendChild(el("span", "what", what(h)));
      list.appendChild(li);
    });
  }

  function tickerItem(t) {
    const lv = levelOf(t);
    const li = el("li", "tick level-" + lv + " tr-" + t.transition);
    li.dataset.alert = t.alert_id;
    li.appendChild(el("span", "t-time", timeText(t.issued_at, true)));
    li.appendChild(el("span", "t-tr", TRANSITIONS[t.transition] || t.transition));
    li.appendChild(el("span", "badge level-" + lv, LEVEL_SHORT[lv]));
    const text = el("span", "t-text");
    text.appendChild(el("span", "place", placeText(t.hazard.place)));
    text.appendChild(el("span", "what", what(t.hazard)));
    li.appendChild(text);
    return li;
  }

  function renderTicker(items, fresh) {
    const list = document.getElementById("ticker");
    if (!fresh) { list.replaceChildren(); wall.tickerIds = new Set(); }
    const ordered = fresh ? items.slice().reverse() : items;  // updates: oldest first, prepend
    ordered.forEach(function (t) {
      if (wall.tickerIds.has(t.alert_id)) return;
      wall.tickerIds.add(t.alert_id);
      const li = tickerItem(t);
      if (fresh) { li.classList.add("fresh"); list.insertBefore(li, list.firstChild); }
      else list.appendChild(li);
    });
    while (list.children.length > 40) {
      wall.tickerIds.delete(list.lastChild.dataset.alert);
      list.removeChild(list.lastChild);
    }
    if (!list.children.length) list.appendChild(el("li", "empty", "暂无动态"));
    else { const e = list.querySelector("li.empty"); if (e) e.remove(); }
  }

  // -- detail (score breakdown and reason) ------------------------------------------------------

  function findAlert(id) {
    const s = wall.summary;
    if (!s) return null;
    return s.top.find(function (a) { return a.hazard_id === id; }) || null;
  }

  function select(id) {
    wall.selected = id;
    document.querySelectorAll("#top-list li.alert").forEach(function (li) {
      li.classList.toggle("selected", li.dataset.hazard === id);
    });
    const known = findAlert(id);
    if (known) { showDetail(known, true); return; }
    fetch("/api/alerts/" + encodeURIComponent(id), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (a) { if (a && wall.selected === id) showDetail(a, true); });
  }

  function row(dl, name, value) {
    if (value === "" || value === null || value === undefined) return;
    dl.appendChild(el("dt", "", name));
    dl.appendChild(el("dd", "", value));
  }

  function showDetail(a, pan) {
    const h = a.hazard;
    const box = document.getElementById("detail");
    box.replaceChildren();
    box.hidden = false;
    box.className = "panel detail level-" + levelOf(a);
    const head = el("div", "detail-head");
    head.appendChild(el("span", "badge level-" + levelOf(a), LEVEL_SHORT[levelOf(a)]));
    head.appendChild(el("span", "detail-title", placeText(h.place) + " " + hazardName(h.hazard_type) +
                                               (a.level === "none" ? "（已解除）" : LEVEL_ZH[a.level] + "预警")));
    const close = el("button", "close", "×");
    close.type = "button";
    close.addEventListener("click", function () {
      box.hidden = true;
      wall.selected = null;
      document.querySelectorAll("#top-list li.selected").forEach(function (li) { li.classList.remove("selected"); });
    });
    head.appendChild(close);
    box.appendChild(head);
    box.appendChild(el("p", "reason", h.reason));
    const score = el("div", "breakdown");
    const total = el("div", "bd-total");
    total.appendChild(el("span", "", "紧急度"));
    total.appendChild(el("b", "", number(a.score)));
    score.appendChild(total);
    const parts = a.score_breakdown || {};
    const max = Math.max(1, Number(a.score) || 0);
    Object.keys(parts).forEach(function (k) {
      const line = el("div", "bd-line");
      line.appendChild(el("span", "bd-name", BREAKDOWN[k] || k));
      const bar = el("span", "bd-bar");
      const fill = el("i", "bd-fill");
      fill.style.width = Math.max(0, Math.min(100, (Number(parts[k]) / max) * 100)) + "%";  // CSSOM, allowed by CSP
      bar.appendChild(fill);
      line.appendChild(bar);
      line.appendChild(el("span", "bd-val", "+" + number(parts[k])));
      score.appendChild(line);
    });
    box.appendChild(score);
    const dl = el("dl", "facts");
    row(dl, "监测点", h.source_name);
    row(dl, "关键数据", figureText(h.key_figure));
    row(dl, "阈值", thresholdText(h.key_figure));
    const tr = h.trend || {};
    if (tr.direction) {
      let t = TREND[tr.direction] || tr.direction;
      if (tr.rate_per_h !== undefined && tr.rate_per_h !== null) t += " " + number(tr.rate_per_h) + (h.key_figure.unit || "") + "/小时";
      if (tr.hours_to_next !== undefined && tr.hours_to_next !== null) t += " · 约" + number(tr.hours_to_next) + "小时达下一级";
      row(dl, "趋势", t);
    }
    row(dl, "观测时间", timeText(h.observed_at, true) + "（" + age(h.observed_at) + "）");
    row(dl, "状态", (TRANSITIONS[a.transition] || a.transition) + " · " + timeText(a.issued_at, true));
    row(dl, "规则", h.rule_id + " v" + h.rule_version);
    box.appendChild(dl);
    if (pan && wall.map && isFinite(h.lat) && isFinite(h.lon)) wall.map.panTo([h.lat, h.lon], { animate: true });
  }

  // -- applying pushed state -----------------------------------------------------------------

  function applySummary(s) {
    wall.summary = s;
    wall.areas = s.areas;
    paintAreas();
    renderKpis(s);
    renderDistricts(s);
    renderFeeds(s);
    renderTop(s);
    renderDrills(s);
    renderTypes();
    document.getElementById("updated").textContent = timeText(s.updated_at, true);
    setConn(s.live ? "实时" : "数据源中断", s.live ? "ok" : "bad");
    if (wall.selected) { const a = findAlert(wall.selected); if (a) showDetail(a, false); }
    wall.lastEventAt = Date.now();
  }

  function applyState(s) {
    wall.stateCount++;
    setMarkers(s.markers);
    renderTicker(s.ticker, false);
    applySummary(s);
  }

  function applyUpdate(u) {
    wall.updateCount++;
    changeMarkers(u.markers);
    if (u.ticker.length) renderTicker(u.ticker, true);
    applySummary(u.summary);
  }

  function setConn(text, cls) {
    const c = document.getElementById("conn");
    c.textContent = text;
    c.className = "conn conn-" + cls;
  }

  let source = null;
  function connect() {
    source = new EventSource("/api/events");
    source.addEventListener("state", function (e) { applyState(JSON.parse(e.data)); });
    source.addEventListener("update", function (e) { applyUpdate(JSON.parse(e.data)); });
    source.onerror = function () {
      setConn("重连中", "bad");
      if (source.readyState === EventSource.CLOSED) {
        // closed for good (e.g. 401 after the token changed): check, then retry or log in
        fetch("/api/config", { credentials: "same-origin" }).then(function (r) {
          if (r.status === 401) window.location.reload();
          else setTimeout(connect, 2000);
        }, function () { setTimeout(connect, 2000); });
      }
    };
  }

  tickClock();
  setInterval(tickClock, 1000);
  setInterval(function () {  // ages in the list move on even when nothing changes
    if (wall.summary) document.querySelectorAll("#top-list li.alert").forEach(function (li) {
      const a = findAlert(li.dataset.hazard);
      const ageBox = li.querySelector(".age");
      if (a && ageBox) ageBox.textContent = age(a.issued_at);
    });
  }, 30000);
  setInterval(function () { document.querySelectorAll("#ticker li.fresh").forEach(function (li) { li.classList.remove("fresh"); }); }, 8000);

  fetch("/api/config", { credentials: "same-origin" })
    .then(function (r) { if (r.status === 401) { window.location.reload(); throw new Error("login"); } return r.json(); })
    .then(initMap)
    .then(function () { wall.ready = true; connect(); })
    .catch(function (err) { setConn("加载失败", "bad"); if (window.console) console.warn(err); });
})();
