// OneMap wall display: the four-level map coloured by warning level, hazard markers (clustered),
// the top-K list (city-wide or narrowed to a district / town / village) with score breakdowns
// and each alert's closed loop, the alert ticker, counts and risk indices, feed health,
// silences and drills.
//
// Data: one server-sent event stream (/api/events): "state" (full snapshot, on every connect)
// and "update" (marker changes, new ticker lines, changed loops, fresh summary), in order on
// one stream. The first update after a snapshot may repeat changes the snapshot already holds
// (each carries a marker's latest value), so applying a delta is idempotent. An area's
// top list comes from /api/top?area=CODE. Boundaries come from /api/boundaries/<level>.
// Everything is served by OneMap itself; nothing from the internet.
//
// Operators: a person on duty may log in with their own token (值班员登录). The token is kept
// in this script's memory only (not in storage, not in a cookie, gone on reload) and sent as
// "Authorization: Bearer" with each step; the wall's own cookie can only view.
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
  const BREAKDOWN = { level: "预警等级", exposure_population: "暴露人口",
                      exposure_sites: "脆弱场所", exposure: "暴露人口", trend: "发展趋势",
                      compound: "复合风险", freshness: "数据时效", confidence: "多源印证",
                      vulnerable: "脆弱对象", proximity: "邻近程度" };
  const STEPS = ["acknowledged", "dispatched", "on_scene", "handled", "closed"];
  const STEP_ZH = { acknowledged: "已确认", dispatched: "已派遣", on_scene: "已到场",
                    handled: "已处置", closed: "已办结" };
  const STEP_ACTION = { acknowledged: "确认", dispatched: "派遣", on_scene: "到场",
                        handled: "处置完毕", closed: "办结" };
  const NOTIFY = { silenced: "已静默", inhibited: "已抑制" };
  const KIND_ZH = { city: "市", district: "区", town: "镇街", village: "村居", all: "全市" };
  const FEED_ZH = { weather: "气象监测", water: "水文监测", geohazard: "地灾监测",
                    incident: "突发事件", cap: "预警发布" };
  const TREND = { rising: "上升", steady: "平稳", falling: "下降" };
  const WEEKDAYS = ["日", "一", "二", "三", "四", "五", "六"];

  const wall = {
    map: null, homeZoom: 0, config: null, mode: "",
    layers: {}, paths: {}, labels: {}, areas: {}, villageCodes: new Set(),
    cluster: null, markers: new Map(), summary: null, tickerIds: new Set(),
    selected: null, lastEventAt: 0, stateCount: 0, updateCount: 0,
    areaCode: "", areaTop: null, areaNames: {}, areaKinds: {}, topFetches: 0,
    operator: null, loops: {},
  };
  let opToken = null;  // the operator's token: this closure only, never on `wall`
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
  function duration(seconds) {
    const sec = Math.max(0, Math.round(Number(seconds) || 0));
    if (sec < 60) return sec + "秒";
    const m = Math.floor(sec / 60);
    if (m < 60) return m + "分" + (sec % 60 ? (sec % 60) + "秒" : "");
    const h = Math.floor(m / 60);
    return h + "小时" + (m % 60 ? (m % 60) + "分" : "");
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
      chunkedLoading: true, chunkInterval: 100, chunkProgress: addDone, showCoverageOnHover: false,
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
    // districts, towns and villages answer clicks (narrow the top list) and hover (tooltip);
    // only the level filled at the current zoom does (CSS: .mode-<level>)
    const layer = L.geoJSON(fc, {
      pane: PANE[level], interactive: level !== "city", smoothFactor: 0.5,
      style: function () { return { stroke: true, weight: 1, color: "#2b3d5e", fill: true, fillColor: NEUTRAL, fillOpacity: 0 }; },
      onEachFeature: function (feature, path) {
        const p = feature.properties;
        paths[p.code] = path;
        path.feature = feature;
        wall.areaNames[p.code] = p.name;
        wall.areaKinds[p.code] = { kind: level, parent: p.parent_code, short: p.short_name || p.name };
        if (level === "city") return;
        path.bindTooltip(function () { return areaTip(p.code); },
                         { sticky: true, className: "area-tip", direction: "top", opacity: 1 });
        path.on("click", function () { selectArea(p.code === wall.areaCode ? "" : p.code); });
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
      const box = document.getElementById("map");
      ["district", "town", "village"].forEach(function (lv) { box.classList.toggle("mode-" + lv, lv === mode); });
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
        if (code === wall.areaCode && level !== "city") {
          style.color = "#4fd1ff"; style.weight = 0.18 * rem(); style.opacity = 1;
        }
        paths[code].setStyle(style);
        const e = paths[code].getElement && paths[code].getElement();
        if (e) {
          e.setAttribute("data-level", label); e.setAttribute("data-filled", filled ? "1" : "0");
          e.classList.toggle("area-selected", code === wall.areaCode);
        }
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

  function sameMarker(mk, m) {  // what a marker shows: place, level, type (not the score)
    const at = mk.getLatLng();
    return at.lat === m[2] && at.lng === m[1] && mk.options.level === m[3] &&
      mk.options.hazardType === m[4];
  }

  // wall.markers is what the map must show (hazard id → marker), changed at once by every
  // pushed event; the cluster layer follows it through syncCluster(). Why not change the layer
  // directly: with chunkedLoading, addLayers() of thousands of markers (a snapshot opened in a
  // storm) runs over many timer ticks, and a marker still waiting in it has no cluster yet, so
  // removeLayers() of it does nothing and the pending add puts it on the map later anyway:
  // every delta for such a marker left a duplicate (or a resolved marker) behind for good.
  // So the layer is changed only while no add is running; what arrives meanwhile is queued.
  const inCluster = new Map();  // hazard id → the marker in the cluster layer (or being added)
  const dirty = new Set();  // ids whose wanted marker may differ from the one in the layer
  let adding = false;       // a chunked addLayers() is running

  function setMarkers(list) {  // a full snapshot: keep markers that did not change
    const next = new Map();
    list.forEach(function (m) {
      const old = wall.markers.get(m[0]);
      next.set(m[0], old && sameMarker(old, m) ? old : makeMarker(m));
      dirty.add(m[0]);
    });
    wall.markers.forEach(function (_, id) { if (!next.has(id)) dirty.add(id); });
    wall.markers = next;
    syncCluster();
  }

  function changeMarkers(delta) {
    delta.remove.forEach(function (id) {
      if (wall.markers.delete(id)) dirty.add(id);
    });
    delta.upsert.forEach(function (m) {
      const old = wall.markers.get(m[0]);
      if (old && sameMarker(old, m)) return;
      wall.markers.set(m[0], makeMarker(m));
      dirty.add(m[0]);
    });
    syncCluster();
  }

  function addDone(processed, total) {  // the cluster's chunkProgress callback
    if (processed < total) return;
    adding = false;
    // called before addLayers() finishes its last chunk: go on once it has returned
    Promise.resolve().then(syncCluster);
  }

  function syncCluster() {
    if (adding || !dirty.size) return;
    const gone = [];
    let added = [];
    dirty.forEach(function (id) {
      const want = wall.markers.get(id);
      const have = inCluster.get(id);
      if (want === have) return;
      if (have) { gone.push(have); inCluster.delete(id); }
      if (want) { added.push(want); inCluster.set(id, want); }
    });
    dirty.clear();
    if (gone.length && gone.length >= inCluster.size) {
      // most of the layer goes (a snapshot after a long break): rebuilding is quicker
      wall.cluster.clearLayers();
      added = Array.from(inCluster.values());
    } else if (gone.length) {
      wall.cluster.removeLayers(gone);
    }
    if (added.length) {
      adding = wall.map.hasLayer(wall.cluster);  // off the map, addLayers() only queues
      wall.cluster.addLayers(added);
    }
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
      tr.dataset.code = d.code;
      const lv = d.level || s.areas[d.code] || "none";
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
      const risk = d.risk_index === null || d.risk_index === undefined ? "" : number1(d.risk_index);
      tr.appendChild(el("td", "num risk" + (d.risk_index ? "" : " zero"), risk));
      if (wall.areaKinds[d.code]) {
        tr.classList.add("pickable");
        if (d.code === wall.areaCode) tr.classList.add("selected");
        tr.addEventListener("click", function () { selectArea(d.code === wall.areaCode ? "" : d.code); });
      }
      body.appendChild(tr);
    });
  }
  function number1(v) { const n = Number(v); return isFinite(n) ? n.toFixed(1) : ""; }

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

  // a row of the ranking (GET /api/top, summary.top): hazard fields at the top level, plus
  // the alert's transition, times, notify decision and closed loop
  function loopTag(a) {
    const loop = a.loop;
    if (!loop || !loop.current) {
      return el("span", "loop-tag loop-pending", "待确认 " + age(a.first_issued_at || a.issued_at).replace("前", ""));
    }
    const t = loop.times && loop.times[loop.current];
    return el("span", "loop-tag loop-" + loop.current,
              STEP_ZH[loop.current] + (t !== undefined ? " +" + duration(t) : ""));
  }

  function notifyTag(a) {
    if (!a.notify || a.notify === "send") return null;
    const tag = el("span", "muted-tag", NOTIFY[a.notify] || "不通知");
    if (a.notify_reason) tag.title = a.notify_reason;
    return tag;
  }

  function topItem(a) {
    const li = el("li", "alert level-" + a.level);
    li.dataset.hazard = a.hazard_id;
    if (wall.selected === a.hazard_id) li.classList.add("selected");
    li.appendChild(el("span", "rank", a.rank));
    li.appendChild(el("span", "badge level-" + a.level, LEVEL_SHORT[a.level]));
    const main = el("span", "main");
    const line1 = el("span", "line1");
    line1.appendChild(el("span", "place", placeText(a.place)));
    line1.appendChild(el("span", "type", hazardName(a.hazard_type)));
    const muted = notifyTag(a);
    if (muted) line1.appendChild(muted);
    main.appendChild(line1);
    const line2 = el("span", "line2");
    line2.appendChild(el("span", "figure", figureText(a.key_figure)));
    line2.appendChild(el("span", "source", a.source_name));
    main.appendChild(line2);
    li.appendChild(main);
    const side = el("span", "side");
    side.appendChild(el("span", "score", number(a.score)));
    side.appendChild(loopTag(a));
    li.appendChild(side);
    li.addEventListener("click", function () { select(a.hazard_id); });
    return li;
  }

  function currentTop() {
    return wall.areaCode && wall.areaTop ? wall.areaTop.top : (wall.summary ? wall.summary.top : []);
  }

  let topShown = null;  // what the list shows now: pushes that change nothing leave it alone
  function renderTop() {
    const list = document.getElementById("top-list");
    const rows = currentTop();
    // the total and the area panel change while the top rows stay the same (a storm adds
    // thousands of alerts below the top 50): they are brought up to date on every push
    const s = wall.summary;
    const total = wall.areaCode && wall.areaTop ? wall.areaTop.area.live : (s ? s.open_total : 0);
    document.getElementById("open-total").textContent = String(total);
    document.getElementById("top-scope").textContent =
      (wall.areaCode ? (wall.areaNames[wall.areaCode] || wall.areaCode) : "全市") + " · 按紧急度排序";
    renderAreaInfo();
    const shown = wall.areaCode + "|" + (wall.selected || "") + "|" + JSON.stringify(rows);
    if (shown === topShown) return;
    topShown = shown;
    list.replaceChildren();
    list.dataset.area = wall.areaCode;
    if (!rows.length) list.appendChild(el("li", "empty", wall.areaCode ? "该区域当前无预警" : "当前无预警"));
    rows.forEach(function (a) { list.appendChild(topItem(a)); });
  }

  // -- areas: tooltip, selection, the narrowed top list -----------------------------------------

  function statsOf(code) {  // [risk index, blue, yellow, orange, red] or null
    return (wall.summary && wall.summary.area_stats && wall.summary.area_stats[code]) || null;
  }

  function areaTip(code) {
    const box = el("div", "tip");
    const level = (wall.summary && wall.summary.areas[code]) || "none";
    const head = el("div", "tip-head");
    head.appendChild(el("i", "swatch level-" + level));
    head.appendChild(el("b", "", wall.areaNames[code] || code));
    head.appendChild(el("span", "tip-level", level === "none" ? "无预警" : LEVEL_ZH[level] + "预警"));
    box.appendChild(head);
    const st = statsOf(code);
    box.appendChild(el("div", "tip-risk", "风险指数 " + (st ? number1(st[0]) : "0.0")));
    if (st) {
      const counts = el("div", "tip-counts");
      [["red", 4], ["orange", 3], ["yellow", 2], ["blue", 1]].forEach(function (p) {
        if (st[p[1]]) counts.appendChild(el("span", "c-" + p[0], LEVEL_SHORT[p[0]] + " " + st[p[1]]));
      });
      box.appendChild(counts);
    }
    box.appendChild(el("div", "tip-hint", "点击：只看该区域"));
    return box;
  }

  function renderAreaInfo() {
    const box = document.getElementById("area-info");
    box.replaceChildren();
    const code = wall.areaCode;
    const area = code && wall.areaTop ? wall.areaTop.area : (wall.summary ? wall.summary.city : null);
    if (!area) return;
    box.classList.toggle("narrowed", !!code);
    box.appendChild(el("i", "swatch level-" + (area.level || "none")));
    box.appendChild(el("span", "ai-level", area.level && area.level !== "none" ? LEVEL_ZH[area.level] : "无预警"));
    const risk = el("span", "ai-risk");
    risk.appendChild(document.createTextNode("风险指数 "));
    risk.appendChild(el("b", "", number1(area.risk_index)));
    box.appendChild(risk);
    const counts = el("span", "ai-counts");
    ["red", "orange", "yellow", "blue"].forEach(function (c) {
      const n = area.counts ? area.counts[c] : 0;
      if (n) counts.appendChild(el("span", "c-" + c, LEVEL_SHORT[c] + n));
    });
    box.appendChild(counts);
    if (code) {
      const back = el("button", "ai-back", "返回全市");
      back.type = "button";
      back.addEventListener("click", function () { selectArea(""); });
      box.appendChild(back);
    }
  }

  function populateAreaSelect() {
    const sel = document.getElementById("area-select");
    const codes = Object.keys(wall.areaKinds);
    const districts = codes.filter(function (c) { return wall.areaKinds[c].kind === "district"; }).sort();
    districts.forEach(function (d) {
      const group = el("optgroup");
      group.label = wall.areaNames[d];
      const opt = el("option", "", wall.areaNames[d] + "（全区）");
      opt.value = d;
      group.appendChild(opt);
      codes.filter(function (c) { return wall.areaKinds[c].kind === "town" && wall.areaKinds[c].parent === d; })
        .sort().forEach(function (t) {
          const o = el("option", "", wall.areaNames[t]);
          o.value = t;
          group.appendChild(o);
        });
      sel.appendChild(group);
    });
    sel.addEventListener("change", function () { selectArea(sel.value); });
  }

  function syncAreaSelect() {
    const sel = document.getElementById("area-select");
    const code = wall.areaCode;
    let known = code === "";
    for (let i = 0; i < sel.options.length; i++) if (sel.options[i].value === code) known = true;
    let extra = sel.querySelector("option.extra");
    if (!known) {  // a village picked on the map: shown as an extra entry
      if (!extra) { extra = el("option", "extra"); sel.appendChild(extra); }
      extra.value = code;
      extra.textContent = (wall.areaNames[code] || code) + "（村居）";
    } else if (extra) extra.remove();
    sel.value = code;
  }

  function selectArea(code) {
    wall.areaCode = code || "";
    wall.areaTop = null;
    syncAreaSelect();
    paintAreas();
    if (wall.summary) renderDistricts(wall.summary);
    renderTop();
    if (code) fetchAreaTop();
  }

  let topTimer = null;
  function fetchAreaTop() {
    const code = wall.areaCode;
    if (!code) return;
    const k = (wall.config && wall.config.top_k) || 50;
    fetch("/api/top?area=" + encodeURIComponent(code) + "&status=actual&k=" + k, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || wall.areaCode !== code) return;
        wall.topFetches++;
        wall.areaTop = data;
        renderTop();
        refreshDetail();
      });
  }
  function scheduleAreaTop() {  // after pushed changes, at most ~3 times a second
    if (!wall.areaCode || topTimer) return;
    topTimer = setTimeout(function () { topTimer = null; fetchAreaTop(); }, 300);
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
      const li = el("li", "drill level-" + a.level);
      li.dataset.hazard = a.hazard_id;
      li.appendChild(el("span", "drill-tag", "【演练】"));
      li.appendChild(el("span", "badge level-" + a.level, LEVEL_SHORT[a.level]));
      li.appendChild(el("span", "place", placeText(a.place)));
      li.appendChild(el("span", "what", what(a)));
      li.addEventListener("click", function () { select(a.hazard_id); });
      list.appendChild(li);
    });
  }

  function silenceText(x) {
    const m = x.matchers || {};
    const parts = [];
    if (m.area_code) parts.push(x.area_name || m.area_code);
    if (m.hazard_type) parts.push(hazardName(m.hazard_type));
    if (m.feed) parts.push(FEED_ZH[m.feed] || m.feed);
    if (m.source_id) parts.push("监测点 " + m.source_id);
    if (m.status) parts.push(m.status === "exercise" ? "演练" : "实战");
    return parts.join(" · ");
  }

  function renderSilences(s) {
    const list = document.getElementById("silences");
    const items = s.silences || [];
    list.replaceChildren();
    document.getElementById("silence-count").textContent =
      String(items.filter(function (x) { return x.state === "active"; }).length);
    document.getElementById("silences-panel").classList.toggle("has-silences", items.length > 0);
    if (!items.length) list.appendChild(el("li", "empty", "无静默规则"));
    items.forEach(function (x) {
      const li = el("li", "silence silence-" + x.state);
      li.dataset.silence = x.id;
      const line1 = el("div", "si-line1");
      line1.appendChild(el("span", "si-state", x.state === "active" ? "生效中" : "待生效"));
      line1.appendChild(el("span", "si-what", silenceText(x)));
      li.appendChild(line1);
      const line2 = el("div", "si-line2");
      line2.appendChild(el("span", "si-until", (x.state === "active" ? "至 " : timeText(x.starts_at, false) + " 起至 ") +
                                                 dateTime(x.ends_at)));
      line2.appendChild(el("span", "si-who", x.created_by));
      li.appendChild(line2);
      li.appendChild(el("div", "si-comment", x.comment));
      if (wall.operator && wall.operator.may_act) {
        const end = el("button", "si-end", "解除");
        end.type = "button";
        end.addEventListener("click", function () { endSilence(x.id, end); });
        line1.appendChild(end);
      }
      list.appendChild(li);
    });
  }
  function dateTime(s) {
    const d = parseTime(s);
    return d ? (d.getMonth() + 1) + "月" + d.getDate() + "日 " + hhmm(d) : "—";
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
    const muted = notifyTag(t);
    if (muted) li.appendChild(muted);
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

  // -- detail (score breakdown, reason, closed loop) ---------------------------------------------

  // an alert from /api/alerts/{id} (ledger JSON) in the shape of a ranking row
  function rowFromAlert(x) {
    const h = x.hazard;
    return { hazard_id: x.hazard_id, hazard_type: h.hazard_type, status: x.status,
             level: x.level, previous_level: x.previous_level, score: x.score,
             breakdown: x.score_breakdown, place: h.place, label: placeText(h.place),
             source_name: h.source_name, key_figure: h.key_figure, reason: h.reason,
             trend: h.trend, lon: h.lon, lat: h.lat, observed_at: h.observed_at,
             alert_id: x.alert_id, seq: x.seq, transition: x.transition, issued_at: x.issued_at,
             notify: x.notify, notify_reason: x.notify_reason, rule_id: h.rule_id,
             rule_version: h.rule_version, feed: h.feed, source_id: h.source_id,
             loop: wall.loops[x.hazard_id] || null, rank: 0 };
  }

  function findAlert(id) {
    const s = wall.summary;
    const lists = [wall.areaTop ? wall.areaTop.top : [], s ? s.top : [], s ? s.drills : []];
    for (let i = 0; i < lists.length; i++) {
      const a = lists[i].find(function (x) { return x.hazard_id === id; });
      if (a) return a;
    }
    return null;
  }

  function select(id) {
    wall.selected = id;
    document.querySelectorAll("#top-list li.alert").forEach(function (li) {
      li.classList.toggle("selected", li.dataset.hazard === id);
    });
    const known = findAlert(id);
    if (known) { wall.detail = known; showDetail(known, true); return; }
    fetch("/api/alerts/" + encodeURIComponent(id), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (x) {
        if (!x || wall.selected !== id) return;
        wall.detail = rowFromAlert(x);
        showDetail(wall.detail, true);
        return fetch("/api/alerts/" + encodeURIComponent(id) + "/steps", { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (st) {
            if (st && wall.selected === id && wall.detail) { wall.detail.loop = st.loop; showDetail(wall.detail, false); }
          });
      });
  }

  function refreshDetail() {
    if (!wall.selected) return;
    const a = findAlert(wall.selected);
    if (a) { wall.detail = a; showDetail(a, false); }
    else if (wall.detail && wall.loops[wall.selected]) {
      wall.detail.loop = wall.loops[wall.selected];
      showDetail(wall.detail, false);
    }
  }

  function row(dl, name, value) {
    if (value === "" || value === null || value === undefined) return;
    dl.appendChild(el("dt", "", name));
    dl.appendChild(el("dd", "", value));
  }

  function levelOfRow(a) { return a.level === "none" ? a.previous_level : a.level; }

  function showDetail(a, pan) {
    const box = document.getElementById("detail");
    const typing = box.querySelector(".step-input");
    const draft = typing ? { step: typing.dataset.step, text: typing.value } : null;
    box.replaceChildren();
    box.hidden = false;
    box.dataset.hazard = a.hazard_id;
    const lv = levelOfRow(a);
    box.className = "panel detail level-" + lv;
    const head = el("div", "detail-head");
    head.appendChild(el("span", "badge level-" + lv, LEVEL_SHORT[lv]));
    head.appendChild(el("span", "detail-title", (a.status === "exercise" ? "【演练】" : "") +
      placeText(a.place) + " " + hazardName(a.hazard_type) +
      (a.level === "none" ? "（已解除）" : LEVEL_ZH[a.level] + "预警")));
    const muted = notifyTag(a);
    if (muted) head.appendChild(muted);
    const close = el("button", "close", "×");
    close.type = "button";
    close.addEventListener("click", function () {
      box.hidden = true;
      wall.selected = null;
      wall.detail = null;
      document.querySelectorAll("#top-list li.selected").forEach(function (li) { li.classList.remove("selected"); });
    });
    head.appendChild(close);
    box.appendChild(head);
    box.appendChild(el("p", "reason", a.reason));
    const score = el("div", "breakdown");
    const total = el("div", "bd-total");
    total.appendChild(el("span", "", "紧急度" + (a.rank ? "（第" + a.rank + "位）" : "")));
    total.appendChild(el("b", "", number(a.score)));
    score.appendChild(total);
    const parts = a.breakdown || {};
    const max = Math.max(1, Number(a.score) || 0);
    Object.keys(parts).forEach(function (k) {
      const v = Number(parts[k]) || 0;
      const line = el("div", "bd-line" + (v < 0 ? " negative" : ""));
      line.dataset.part = k;
      line.appendChild(el("span", "bd-name", BREAKDOWN[k] || k));
      const bar = el("span", "bd-bar");
      const fill = el("i", "bd-fill");
      fill.style.width = Math.max(0, Math.min(100, (Math.abs(v) / max) * 100)) + "%";  // CSSOM, allowed by CSP
      bar.appendChild(fill);
      line.appendChild(bar);
      line.appendChild(el("span", "bd-val", (v < 0 ? "−" : "+") + number(Math.abs(v))));
      score.appendChild(line);
    });
    box.appendChild(score);
    box.appendChild(loopBox(a, draft));
    const dl = el("dl", "facts");
    row(dl, "监测点", a.source_name);
    row(dl, "关键数据", figureText(a.key_figure));
    row(dl, "阈值", thresholdText(a.key_figure));
    const tr = a.trend || {};
    if (tr.direction) {
      let t = TREND[tr.direction] || tr.direction;
      const unit = (a.key_figure && a.key_figure.unit) || "";
      if (tr.rate_per_h !== undefined && tr.rate_per_h !== null) t += " " + number(tr.rate_per_h) + unit + "/小时";
      const next = tr.hours_to_next_level !== undefined ? tr.hours_to_next_level : tr.hours_to_next;
      if (next !== undefined && next !== null) t += " · 约" + number(next) + "小时达下一级";
      row(dl, "趋势", t);
    }
    row(dl, "观测时间", timeText(a.observed_at, true) + "（" + age(a.observed_at) + "）");
    row(dl, "状态", (TRANSITIONS[a.transition] || a.transition || "") + " · " + timeText(a.issued_at, true));
    if (a.notify && a.notify !== "send") row(dl, "通知", (NOTIFY[a.notify] || a.notify) + (a.notify_reason ? "：" + a.notify_reason : ""));
    if (a.rule_id) row(dl, "规则", a.rule_id + " v" + a.rule_version);
    box.appendChild(dl);
    if (pan && wall.map && isFinite(a.lat) && isFinite(a.lon)) wall.map.panTo([a.lat, a.lon], { animate: true });
  }

  // the closed loop: steps taken (who, when, how long after the alert), and for an operator
  // the buttons of the steps that may follow
  function loopBox(a, draft) {
    const box = el("div", "loop");
    const loop = a.loop || { current: null, steps: [], times: {} };
    box.dataset.current = loop.current || "";
    const head = el("div", "loop-head");
    head.appendChild(el("span", "loop-title", "处置闭环"));
    head.appendChild(el("span", "loop-current loop-" + (loop.current || "pending"),
                        loop.current ? STEP_ZH[loop.current] : "待确认"));
    box.appendChild(head);
    const track = el("ol", "loop-steps");
    STEPS.forEach(function (name) {
      const taken = (loop.steps || []).filter(function (x) { return x.step === name; });
      const li = el("li", "loop-step" + (taken.length ? " done" : ""));
      li.dataset.step = name;
      li.appendChild(el("span", "ls-name", STEP_ZH[name]));
      if (taken.length) {
        const x = taken[taken.length - 1];
        const t = loop.times ? loop.times[name] : undefined;
        li.appendChild(el("span", "ls-time", timeText(x.at, true)));
        if (t !== undefined) li.appendChild(el("span", "ls-elapsed", "+" + duration(t)));
        li.appendChild(el("span", "ls-who", x.actor + (x.via === "sms" ? " · 短信" : "")));
        const extra = x.unit || x.note;
        if (extra) li.appendChild(el("span", "ls-note", extra));
      }
      track.appendChild(li);
    });
    box.appendChild(track);
    if (wall.operator && wall.operator.may_act && a.alert_id) box.appendChild(actions(a, loop, draft));
    return box;
  }

  function actions(a, loop, draft) {
    const bar = el("div", "loop-actions");
    const reached = loop.current ? STEPS.indexOf(loop.current) : -1;
    const msg = el("span", "loop-msg");
    const next = reached < 0 ? ["acknowledged"] : STEPS.slice(reached + 1);
    next.forEach(function (name) {
      const b = el("button", "step-btn", STEP_ACTION[name]);
      b.type = "button";
      b.dataset.step = name;
      b.addEventListener("click", function () {
        if (name === "dispatched" || name === "closed") { askText(bar, a, name, msg, ""); return; }
        sendStep(a, name, "", msg);
      });
      bar.appendChild(b);
    });
    bar.appendChild(msg);
    if (draft && next.indexOf(draft.step) >= 0) askText(bar, a, draft.step, msg, draft.text);
    return bar;
  }

  function askText(bar, a, name, msg, text) {
    const old = bar.querySelector(".step-form");
    if (old) old.remove();
    const form = el("form", "step-form");
    const input = el("input", "step-input");
    input.dataset.step = name;
    input.maxLength = 500;
    input.placeholder = name === "dispatched" ? "派往单位或人员" : "办结反馈（处置结果）";
    input.value = text || "";
    const ok = el("button", "", "提交");
    ok.type = "submit";
    form.appendChild(input);
    form.appendChild(ok);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!input.value.trim()) { msg.textContent = "请填写" + (name === "dispatched" ? "派往单位" : "办结反馈"); return; }
      sendStep(a, name, input.value.trim(), msg);
    });
    bar.insertBefore(form, msg);
    input.focus();
  }

  function sendStep(a, name, text, msg) {
    if (!opToken) return;
    const body = { step: name, seq: a.seq };
    if (name === "dispatched") body.unit = text;
    else if (text) body.note = text;
    msg.textContent = "提交中…";
    fetch("/api/alerts/" + encodeURIComponent(a.hazard_id) + "/steps", {
      method: "POST", credentials: "omit", cache: "no-store",
      headers: { "Authorization": "Bearer " + opToken, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (data) { return { status: r.status, data: data }; });
    }).then(function (res) {
      if (res.status === 200) {
        wall.loops[a.hazard_id] = res.data.loop;
        a.loop = res.data.loop;
        if (wall.selected === a.hazard_id) showDetail(a, false);
      } else if (res.status === 401 || res.status === 403) {
        setOperator(null);
        msg.textContent = "无权操作，请重新登录";
      } else {
        msg.textContent = "未受理：" + (REFUSALS[res.data.error] || res.data.error || res.status);
      }
    }, function () { msg.textContent = "提交失败，请重试"; });
  }
  const REFUSALS = { "acknowledge first": "请先确认", "closed needs feedback": "办结需填写反馈",
                     "dispatched needs the unit or person sent": "派遣需填写单位或人员" };

  // -- applying pushed state -----------------------------------------------------------------

  function applySummary(s) {
    wall.summary = s;
    wall.areas = s.areas;
    [s.top, s.drills].forEach(function (rows) {
      rows.forEach(function (a) { if (a.loop) wall.loops[a.hazard_id] = a.loop; });
    });
    paintAreas();
    renderKpis(s);
    renderDistricts(s);
    renderFeeds(s);
    renderTop();
    renderDrills(s);
    renderSilences(s);
    renderTypes();
    document.getElementById("updated").textContent = timeText(s.updated_at, true);
    setConn(s.live ? "实时" : "数据源中断", s.live ? "ok" : "bad");
    // an operator typing a unit or feedback is not interrupted by the pushes
    const typing = document.activeElement && document.activeElement.classList.contains("step-input");
    if (!typing) refreshDetail();
    scheduleAreaTop();
    wall.lastEventAt = Date.now();
  }

  function applyState(s) {
    wall.stateCount++;
    wall.loops = {};
    setMarkers(s.markers);
    renderTicker(s.ticker, false);
    applySummary(s);
  }

  function applyUpdate(u) {
    wall.updateCount++;
    changeMarkers(u.markers);
    if (u.ticker.length) renderTicker(u.ticker, true);
    Object.keys(u.loops || {}).forEach(function (id) {
      if (u.loops[id]) wall.loops[id] = u.loops[id]; else delete wall.loops[id];
    });
    applySummary(u.summary);
  }

  // -- operator login: a person's own token, in memory only ------------------------------------

  function setOperator(who, token) {
    wall.operator = who && who.may_act ? { name: who.name, role: who.role, may_act: true } : null;
    opToken = wall.operator ? token : null;
    const name = document.getElementById("op-name");
    const login = document.getElementById("op-login");
    name.replaceChildren();
    if (wall.operator) {
      name.appendChild(el("span", "", "值班员 "));
      name.appendChild(el("b", "", wall.operator.name));
      const out = el("button", "op-logout", "退出");
      out.type = "button";
      out.addEventListener("click", function () { setOperator(null); });
      name.appendChild(out);
    }
    name.hidden = !wall.operator;
    login.hidden = !!wall.operator || !(wall.config && wall.config.operators);
    document.body.classList.toggle("operator-on", !!wall.operator);
    if (wall.summary) renderSilences(wall.summary);
    if (wall.detail && wall.selected) showDetail(wall.detail, false);
  }

  function initOperator() {
    const form = document.getElementById("op-form");
    const input = document.getElementById("op-token");
    const error = document.getElementById("op-error");
    const login = document.getElementById("op-login");
    login.hidden = !(wall.config && wall.config.operators);
    login.addEventListener("click", function () {
      form.hidden = false; login.hidden = true; error.textContent = ""; input.focus();
    });
    document.getElementById("op-cancel").addEventListener("click", function () {
      form.hidden = true; input.value = ""; setOperator(wall.operator ? wall.operator : null, opToken);
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      fetch("/api/whoami", { credentials: "omit", cache: "no-store",
                             headers: { "Authorization": "Bearer " + token } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (who) {
          if (who && who.may_act) {
            input.value = ""; form.hidden = true; setOperator(who, token);
          } else {
            error.textContent = who && who.name ? "该口令无操作权限" : "口令无效";
          }
        }, function () { error.textContent = "无法连接"; });
    });
  }

  function endSilence(id, button) {
    if (!opToken) return;
    button.disabled = true;
    fetch("/api/silences/" + encodeURIComponent(id), {
      method: "DELETE", credentials: "omit", cache: "no-store",
      headers: { "Authorization": "Bearer " + opToken },
    }).then(function (r) { if (!r.ok) button.disabled = false; },
            function () { button.disabled = false; });
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
  setInterval(function () {  // "待确认 N分钟" in the list moves on even when nothing changes
    if (wall.summary) document.querySelectorAll("#top-list li.alert").forEach(function (li) {
      const a = findAlert(li.dataset.hazard);
      const tag = li.querySelector(".loop-tag");
      if (a && tag) tag.replaceWith(loopTag(a));
    });
  }, 30000);
  setInterval(function () { document.querySelectorAll("#ticker li.fresh").forEach(function (li) { li.classList.remove("fresh"); }); }, 8000);

  fetch("/api/config", { credentials: "same-origin" })
    .then(function (r) { if (r.status === 401) { window.location.reload(); throw new Error("login"); } return r.json(); })
    .then(initMap)
    .then(function () { populateAreaSelect(); initOperator(); wall.ready = true; connect(); })
    .catch(function (err) { setConn("加载失败", "bad"); if (window.console) console.warn(err); });
})();
