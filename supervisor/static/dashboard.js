// siocluster dashboard. No dependencies: plain DOM and SVG.
//
// Data comes from GET dashboard/stream, Server-Sent Events read with fetch(), so the admin
// token travels in the Authorization header (EventSource cannot send one, and a token in the
// URL would end up in logs and history). The token is kept in memory and sessionStorage only.
// Every value from the server is put in the page with textContent, never as markup.
"use strict";

const TOKEN_KEY = "siocluster.admin.token";
const WINDOW_S = 600;  // the charts span the cluster's life, from 1 to 10 minutes
const MIN_SPAN_S = 60;
const COLORS = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f",
                "#718096"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  points: [],
  events: [],
  status: null,
  serverSkew: 0,  // server clock minus ours, for uptimes
  controller: null,
  retry: null,
  armedDrain: null,  // {pid, until}: the row's Drain button asked "Drain?" (rows re-render)
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// Formatting

function fmtDuration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  s = Math.max(0, s);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function fmtNumber(v, digits = 0) {
  if (v === null || v === undefined) return "–";
  return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits,
                                               minimumFractionDigits: digits });
}

function fmtMB(bytes) {
  return bytes === null || bytes === undefined ? "–" : `${(bytes / 1048576).toFixed(1)} MB`;
}

function fmtTime(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString(undefined, { hour12: false });
}

// The stream

function setConn(text, cls) {
  const pill = $("conn");
  pill.textContent = text;
  pill.className = `pill ${cls || ""}`;
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  if (message) $("login-message").textContent = message;
  setConn("token needed", "down");
  $("token").focus();
}

function scheduleRetry() {
  clearTimeout(state.retry);
  state.retry = setTimeout(connect, 1000);
}

function headers(extra = {}) {
  const h = { ...extra };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  return h;
}

async function connect() {
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  let response;
  try {
    response = await fetch("dashboard/stream", {
      headers: headers({ Accept: "text/event-stream" }), cache: "no-store",
      credentials: "omit", signal: controller.signal,
    });
  } catch (err) {
    setConn("offline, retrying", "down");
    scheduleRetry();
    return;
  }
  if (response.status === 401) {
    const had = Boolean(state.token);
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(had ? "That token was refused. Enter the admin token."
                  : "This cluster's admin listener needs its token. It is kept in this tab " +
                    "only (sessionStorage) and sent in a header, never in a URL.");
    return;
  }
  if (!response.ok || !response.body) {
    setConn(`error ${response.status}, retrying`, "down");
    scheduleRetry();
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  setConn("live", "live");
  state.points = [];
  state.events = [];
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = chunk.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart()).join("\n");
        if (data) onMessage(JSON.parse(data));
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  setConn("disconnected, retrying", "down");
  scheduleRetry();
}

function onMessage(msg) {
  if (msg.type !== "state") return;
  state.serverSkew = msg.now - Date.now() / 1000;
  state.status = msg.status;
  state.points.push(...msg.points);
  const horizon = msg.now - WINDOW_S;
  while (state.points.length && state.points[0].t < horizon) state.points.shift();
  state.events.push(...msg.events);
  if (state.events.length > 200) state.events.splice(0, state.events.length - 200);
  render(msg);
}

// Rendering

function render(msg) {
  const status = msg.status;
  $("app").textContent = `${status.app} · master pid ${status.master.pid}`;
  renderHealth(status.health);
  renderCards(status);
  renderWorkers(status, msg.now);
  renderAdapters(status.adapter);
  renderHosts(msg.hosts);
  renderBalancer(status.balancer);
  renderCharts(msg.now);
  if (msg.events.length) renderEvents();
}

function renderHealth(health) {
  const banner = $("health");
  banner.className = `banner ${health.status}`;
  $("health-status").textContent =
    `${health.status} · ${health.ready} of ${health.desired} workers ready`;
  $("health-reasons").replaceChildren(...health.reasons.map((r) => el("li", { text: r })));
}

function renderCards(status) {
  const last = state.points[state.points.length - 1] || {};
  $("ready").textContent = `${status.health.ready} / ${status.health.desired}`;
  const connections = status.workers.reduce((n, w) => n + (w.connections || 0), 0);
  $("connections").textContent = fmtNumber(connections);
  $("messages").textContent = fmtNumber(last.messages_per_s, 1);
  $("handshakes").textContent = fmtNumber(last.handshakes_per_s, 1);
  $("latency").textContent = last.p50_ms === null || last.p50_ms === undefined ? "–"
    : `${fmtNumber(last.p50_ms, 1)} / ${fmtNumber(last.p99_ms, 1)} ms`;
  $("restarts").textContent = fmtNumber(
    Object.values(status.restarts_by_cause).reduce((a, b) => a + b, 0));
  $("desired").textContent = status.master.workers_desired;
}

function cell(label, text, cls) {
  return el("td", { text: text === null || text === undefined ? "–" : String(text),
                    "data-label": label, class: cls || "" });
}

function renderWorkers(status, now) {
  const adapters = new Map(status.adapter.workers.map((a) => [a.pid, a]));
  const rows = status.workers.map((w) => {
    const adapter = adapters.get(w.pid);
    const asked = state.armedDrain && state.armedDrain.pid === w.pid &&
      Date.now() < state.armedDrain.until;
    const drain = el("button", { type: "button", text: asked ? "Drain?" : "Drain",
                                 class: asked ? "armed drain" : "drain",
                                 title: "start a replacement, then drain this worker" });
    drain.disabled = !w.pid || w.state !== "ready";
    drain.addEventListener("click", () => {
      // First click asks, a second within 3 s acts.
      if (asked) {
        state.armedDrain = null;
        post("drain", { slot: w.slot, pid: w.pid });
      } else {
        state.armedDrain = { pid: w.pid, until: Date.now() + 3000 };
      }
      renderWorkers(state.status, Date.now() / 1000 + state.serverSkew);
    });
    const tr = el("tr", { "data-slot": w.slot, "data-pid": w.pid || "", "data-state": w.state }, [
      cell("slot", w.slot),
      cell("pid", w.pid, "pid"),
      cell("state", w.state, `state state-${w.state}`),
      cell("generation", w.generation === null ? null : w.generation.toString(16)),
      cell("uptime", w.started_at ? fmtDuration(now - w.started_at) : null),
      cell("restarts", w.restarts),
      cell("last exit", w.last_exit || w.reason || "", "exit"),
      cell("RSS", fmtMB(w.rss_bytes)),
      cell("CPU", w.cpu_percent === null || w.cpu_percent === undefined ? null
        : `${w.cpu_percent.toFixed(0)}%`),
      cell("fds", w.fds === undefined ? null
        : (w.fd_limit ? `${w.fds} / ${w.fd_limit}` : w.fds)),
      cell("connections", w.connections, "conns"),
      cell("heartbeat", w.heartbeat_age_s === null ? null : `${w.heartbeat_age_s.toFixed(1)}s ago`),
      cell("loop lag", w.loop_lag_s === undefined ? null : `${(w.loop_lag_s * 1000).toFixed(1)} ms`),
      cell("adapter", adapter ? adapter.state : "–"),
      el("td", { "data-label": "" }, [drain]),
    ]);
    return tr;
  });
  $("workers").tBodies[0].replaceChildren(...rows);
}

function renderAdapters(adapter) {
  const rows = adapter.workers.map((a) => el("tr", {}, [
    cell("slot", a.slot), cell("backend", a.backend || adapter.backend),
    cell("state", a.state, `state state-${a.state === "connected" ? "ready" : "dead"}`),
    cell("peers", Array.isArray(a.peers) ? a.peers.length : null),
    cell("sent", fmtNumber(a.sent)), cell("received", fmtNumber(a.received)),
    cell("dropped", fmtNumber(a.dropped)), cell("buffered", fmtNumber(a.buffered_bytes)),
  ]));
  if (!rows.length) {
    rows.push(el("tr", {}, [el("td", { colSpan: 8, text: `backend ${adapter.backend}` })]));
  }
  $("adapters").tBodies[0].replaceChildren(...rows);
}

function renderHosts(hosts) {
  $("hosts").replaceChildren(...hosts.map((h) => el("li", {
    class: h.local || h.reachable ? "" : "bad",
    text: h.local
      ? `${h.host}${h.host_id ? ` [${h.host_id}]` : ""} (this host): master pid ` +
        `${h.master_pid}, up ${fmtDuration(h.uptime_s)}, ${h.workers_ready}/` +
        `${h.workers_desired} workers ready, ${fmtNumber(h.connections)} connections, ` +
        `port ${h.port}, adapter ${h.backend}`
      : `[${h.host}] at ${h.address}: ${h.workers} workers, ${fmtNumber(h.connections)} ` +
        `connections, seen ${h.last_seen_s}s ago${h.reachable ? "" : ", UNREACHABLE"}`,
  })));
}

function renderBalancer(b) {
  const items = [];
  for (const [key, value] of Object.entries(b)) {
    items.push(el("dt", { text: key.replaceAll("_", " ") }), el("dd", { text: fmtNumber(value) }));
  }
  $("balancer").replaceChildren(...items);
}

function renderEvents() {
  const items = state.events.slice().reverse().map((e) => el("li", {
    class: e.level, "data-kind": e.kind, "data-slot": e.slot === null ? "" : e.slot,
  }, [
    el("time", { text: fmtTime(e.t), dateTime: new Date(e.t * 1000).toISOString() }),
    el("span", { class: "kind", text: e.kind }),
    el("span", { class: "text", text: e.text }),
  ]));
  $("events").replaceChildren(...items);
}

// Charts: one SVG each, a polyline per series over the last ten minutes.

const CHARTS = [
  { id: "chart-connections", title: "Connections", series: () => [
    { name: "connections", get: (p) => p.connections }] },
  { id: "chart-messages", title: "Messages received /s", series: () => [
    { name: "messages/s", get: (p) => p.messages_per_s }] },
  { id: "chart-handshakes", title: "Handshakes /s", series: () => [
    { name: "handshakes/s", get: (p) => p.handshakes_per_s }] },
  { id: "chart-latency", title: "Proxy latency (ms)", series: () => [
    { name: "p50", get: (p) => p.p50_ms }, { name: "p99", get: (p) => p.p99_ms }] },
  { id: "chart-rss", title: "RSS per worker (MB)", series: () => {
    const slots = new Set();
    for (const p of state.points) for (const slot of Object.keys(p.rss_mb)) slots.add(slot);
    return [...slots].sort((a, b) => a - b).map((slot) => (
      { name: `worker ${slot}`, get: (p) => p.rss_mb[slot] ?? null }));
  } },
  { id: "chart-restarts", title: "Restarts (total)", series: () => [
    { name: "restarts", get: (p) => p.restarts }] },
];

function renderCharts(now) {
  const box = $("charts");
  for (const spec of CHARTS) {
    let node = document.getElementById(spec.id);
    if (!node) {
      node = el("figure", { class: "chart", id: spec.id }, [el("h3", { text: spec.title })]);
      node.append(svg("svg", { viewBox: "0 0 300 110", preserveAspectRatio: "none",
                               role: "img", "aria-label": spec.title }));
      node.append(el("div", { class: "legend" }));
      box.append(node);
    }
    drawChart(node, spec.series(), now);
  }
  const span = chartSpan(now);
  $("chart-span").textContent = `last ${spanLabel(span).slice(1)}`;
}

function chartSpan(now) {
  const first = state.points.length ? state.points[0].t : now;
  return Math.min(WINDOW_S, Math.max(MIN_SPAN_S, now - first));
}

function spanLabel(span) {
  return span >= 120 ? `−${Math.round(span / 60)} min` : `−${Math.round(span)} s`;
}

function drawChart(node, series, now) {
  const W = 300, H = 110, left = 34, bottom = 14, top = 6;
  const span = chartSpan(now);
  const plotW = W - left - 4, plotH = H - bottom - top;
  let max = 0;
  for (const s of series) {
    for (const p of state.points) {
      const v = s.get(p);
      if (v !== null && v !== undefined && v > max) max = v;
    }
  }
  const ceiling = niceCeiling(max);
  const x = (t) => left + plotW * (1 - Math.min(span, Math.max(0, now - t)) / span);
  const y = (v) => top + plotH * (1 - v / ceiling);
  const root = node.querySelector("svg");
  const parts = [
    svg("line", { class: "axis", x1: left, y1: top + plotH, x2: W - 4, y2: top + plotH }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotH }),
  ];
  const label = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; return t; };
  parts.push(label(shortNumber(ceiling), { x: left - 3, y: top + 8, "text-anchor": "end" }));
  parts.push(label("0", { x: left - 3, y: top + plotH, "text-anchor": "end" }));
  parts.push(label(spanLabel(span), { x: left, y: H - 2 }));
  parts.push(label("now", { x: W - 4, y: H - 2, "text-anchor": "end" }));
  const legend = [];
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    let run = [];
    const flush = () => {
      if (run.length) parts.push(svg("polyline", { points: run.join(" "), stroke: color }));
      run = [];
    };
    for (const p of state.points) {
      const v = s.get(p);
      if (v === null || v === undefined) { flush(); continue; }
      run.push(`${x(p.t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    flush();
    const last = state.points.length ? s.get(state.points[state.points.length - 1]) : null;
    const swatch = el("i");
    swatch.style.background = color;
    legend.push(el("span", {}, [swatch, `${s.name} ${last === null || last === undefined
      ? "–" : shortNumber(last)}`]));
  });
  root.replaceChildren(...parts);
  node.querySelector(".legend").replaceChildren(...legend);
}

function niceCeiling(v) {
  if (!(v > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * exp) return m * exp;
  return 10 * exp;
}

function shortNumber(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (v >= 100) return v.toFixed(0);
  return Number(v.toFixed(2)).toString();
}

// Actions (POST, token in the header)

function armed(button, question, act) {
  // First click asks, a second within 3 s acts: no modal dialog, phone-friendly.
  if (button.classList.contains("armed")) {
    button.classList.remove("armed");
    button.textContent = button.dataset.label;
    act();
    return;
  }
  button.dataset.label = button.textContent;
  button.textContent = question;
  button.classList.add("armed");
  setTimeout(() => {
    if (button.classList.contains("armed")) {
      button.classList.remove("armed");
      button.textContent = button.dataset.label;
    }
  }, 3000);
}

async function post(path, body) {
  const result = $("action-result");
  try {
    const response = await fetch(path, {
      method: "POST", cache: "no-store", credentials: "omit",
      headers: headers({ "Content-Type": "application/json" }),
      body: body === undefined ? "{}" : JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.status === 401) { showLogin("The token was refused."); return; }
    result.textContent = response.ok ? `${path}: accepted`
      : `${path}: ${answer.error || response.status}`;
  } catch (err) {
    result.textContent = `${path}: ${err}`;
  }
}

function scaleBy(delta) {
  if (!state.status) return;
  const workers = state.status.master.workers_desired + delta;
  if (workers < 1) return;
  post("scale", { workers });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();  // never submitted: the token stays out of every URL
    const input = $("token");
    state.token = input.value.trim();
    input.value = "";
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    connect();
  });
  $("reload").addEventListener("click", (e) => armed(e.currentTarget, "Reload?",
                                                     () => post("reload")));
  $("scale-up").addEventListener("click", () => scaleBy(1));
  $("scale-down").addEventListener("click", () => scaleBy(-1));
  connect();
});
