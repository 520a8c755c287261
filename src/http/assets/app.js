// adaptd web page: live view, events, samples, training, speakers and status.
// Plain ES2020, no dependencies. Everything shown is inserted with textContent or
// createElement, never as HTML. Live data comes from one EventSource (/api/stream).
"use strict";

(() => {
// Loaded again by the recorder as an AudioWorklet module (the page's CSP allows only 'self'
// scripts): there it only registers the capture processor.
if (typeof registerProcessor === "function" && typeof AudioWorkletProcessor === "function") {
  registerProcessor("adaptd-capture", class extends AudioWorkletProcessor {
    process(inputs) { const x = inputs[0] && inputs[0][0]; if (x) this.port.postMessage(x.slice(0)); return true; }
  });
  return;
}
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const enc = encodeURIComponent;
const SVGNS = "http://www.w3.org/2000/svg";
const RESERVED = new Set(["available", "state", "stats", "training", "reply", "cmd", "samples",
  "detections", "events", "snapshot"]);
const PAGES = ["live", "events", "samples", "training", "speakers", "status"];
const KEEP_DETS = 30;
const MAX_OBJECTS = 20;
const MAX_SPEAKERS = 20;
const RECORD_S = 5;

const S = {
  session: null, csrf: null, ready: false, page: "live",
  es: null, esBackoff: 1000, esTimer: null,
  state: null, stats: null,
  cams: new Map(),
  labels: new Set(),
  models: [],
  training: {},          // model -> last `training` message
  replies: {},           // "training:<model>" -> {cls, text}, kept across re-renders
  events: { oldest: null },
  rec: null,
};

// ---------- small helpers ----------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}
function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  for (const k of kids) if (k != null) el.append(k instanceof Node ? k : String(k));
  return el;
}
function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}
const isNum = (x) => typeof x === "number" && isFinite(x);
const f2 = (x) => (isNum(x) ? x.toFixed(2) : "–");
const f3 = (x) => (isNum(x) ? x.toFixed(3) : "–");
function fmtClock(ms) {
  const d = new Date(ms);
  return isNaN(d) ? "–" : d.toLocaleTimeString();
}
function fmtDate(ms) {
  if (!isNum(ms)) return "–";
  const d = new Date(ms);
  if (isNaN(d)) return "–";
  const now = new Date();
  return d.toDateString() === now.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}
const fmtSec = (s) => (isNum(s) ? fmtDate(s * 1000) : "–");
function fmtBytes(n) {
  if (!isNum(n)) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
}
function fmtDuration(s) {
  if (!isNum(s)) return "–";
  s = Math.floor(s);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600),
    m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d} d ${hh} h ${m} min`;
  if (hh) return `${hh} h ${m} min`;
  if (m) return `${m} min ${sec} s`;
  return `${sec} s`;
}
const shortId = (id) => (id ? String(id).slice(-6) : "");
function debounce(key, ms, fn) {
  clearTimeout(debounce.t[key]);
  debounce.t[key] = setTimeout(fn, ms);
}
debounce.t = {};

// ---------- API ----------

class ApiError extends Error {
  constructor(message, status, body) { super(message); this.status = status; this.body = body; }
}

async function api(method, path, body, opts = {}) {
  const headers = {};
  const init = { method, credentials: "same-origin", headers, cache: "no-store" };
  if (method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  if (opts.raw !== undefined) {
    init.body = opts.raw;
    if (opts.type) headers["Content-Type"] = opts.type;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError("cannot reach the device (" + (e && e.message ? e.message : e) + ")", 0, null);
  }
  const text = await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = null; } }
  if (res.status === 401 && path !== "/api/login") needLogin(data && data.error);
  if (!res.ok || (data && data.ok === false)) {
    let msg = data && typeof data.error === "string" ? data.error : "";
    if (!msg) msg = `HTTP ${res.status} ${res.statusText || ""}`.trim() + (text && !data ? ": " + text.slice(0, 300) : "");
    throw new ApiError(msg, res.status, data);
  }
  return data;
}

// The words for a successful reply.
function describe(data) {
  if (data == null) return "ok";
  const r = data.result !== undefined ? data.result : data;
  if (r == null || typeof r !== "object") return r == null ? "ok" : "ok: " + r;
  if ("kept" in r && "label" in r) {
    if (!r.kept) return `not kept: the store for “${r.label}” is full and left this one out`;
    let t = `stored as “${r.label}” (sample #${r.id}, ${r.split})`;
    if (Array.isArray(r.evicted) && r.evicted.length) t += `; evicted #${r.evicted.join(", #")}`;
    return t;
  }
  if ("true_examples" in r) {
    const counts = r.counts ? Object.entries(r.counts).map(([k, v]) => `${k} ${v}`).join(", ") : "";
    return `marked as a false positive (${r.class || "?"}); ${r.true_examples} true example(s)` +
      (counts ? `; filter samples: ${counts}` : "") + (r.training ? `; training: ${r.training}` : "");
  }
  if (r.status === "started") return "training started" + (Array.isArray(r.models) ? ": " + r.models.join(", ") : "");
  if ("reason" in r && "version" in r) return r.reason || (r.deployed ? `v${r.version} in service` : `v${r.version} not deployed`);
  if ("removed" in r) return `removed ${r.removed}`;
  if ("label" in r && "id" in r) return `now “${r.label}” (sample #${r.id})`;
  const rest = Object.assign({}, r);
  delete rest.ok;
  const keys = Object.keys(rest);
  return keys.length ? "ok: " + JSON.stringify(rest) : "ok";
}

// Where a sample came from, in words: {"kind": "web", "name": "alice.jpg"} -> "web: alice.jpg".
function sourceText(src) {
  if (!src) return "?";
  if (typeof src === "string") return src;
  const detail = src.name || src.topic || src.path || src.class || "";
  return (src.kind || "?").replace(/_/g, " ") + (detail ? ": " + detail : "");
}

function setReply(el, cls, text) {
  if (!el) return;
  el.className = "reply " + cls;
  el.textContent = text;
}
async function withReply(el, promise, key) {
  setReply(el, "pending", "working…");
  if (key) S.replies[key] = { cls: "pending", text: "working…" };
  try {
    const d = await promise;
    const t = describe(d);
    setReply(el, "ok", t);
    if (key) S.replies[key] = { cls: "ok", text: t };
    return d;
  } catch (e) {
    setReply(el, "error", e.message);
    if (key) S.replies[key] = { cls: "error", text: e.message };
    return null;
  }
}

// ---------- banner ----------

function flash(text, kind = "info", ms = 8000) {
  const b = $("#banner");
  b.className = kind;
  b.textContent = text;
  b.hidden = false;
  clearTimeout(flash.t);
  if (ms) flash.t = setTimeout(() => { b.hidden = true; }, ms);
}

// ---------- session ----------

function applySession(s) {
  S.session = s || {};
  S.csrf = s && s.csrf ? s.csrf : null;
  $("#logout").hidden = !(s && s.auth === "password" && s.logged_in);
}

function needLogin(msg) {
  if (S.es) { S.es.close(); S.es = null; }
  clearTimeout(S.esTimer);
  S.ready = false;
  $("#app").hidden = true;
  $("#login").hidden = false;
  document.body.classList.add("logged-out");
  $("#login-error").textContent = msg || "";
  setStreamState("offline");
  const pw = $("#password");
  pw.value = "";
  setTimeout(() => pw.focus(), 0);
}

function enterApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  document.body.classList.remove("logged-out");
  S.ready = true;
  openStream();
  route();
}

async function start() {
  wire();
  let s;
  try {
    s = await api("GET", "/api/session");
  } catch (e) {
    if (e.status === 401) return;
    flash(e.message + " — retrying", "error", 0);
    setTimeout(start2, 5000);
    return;
  }
  applySession(s);
  if (s && s.logged_in) enterApp(); else needLogin();
}
async function start2() {
  try {
    const s = await api("GET", "/api/session");
    $("#banner").hidden = true;
    applySession(s);
    if (s && s.logged_in) enterApp(); else needLogin();
  } catch (e) {
    if (e.status !== 401) setTimeout(start2, 10000);
  }
}

async function onLogin(ev) {
  ev.preventDefault();
  const btn = $("#login-submit");
  const err = $("#login-error");
  err.textContent = "";
  btn.disabled = true;
  try {
    const d = await api("POST", "/api/login", { password: $("#password").value });
    applySession({ auth: "password", logged_in: true, csrf: d && d.csrf });
    $("#password").value = "";
    enterApp();
  } catch (e) {
    err.textContent = e.status === 401 && !(e.body && e.body.error) ? "wrong password" : e.message;
  } finally {
    btn.disabled = false;
  }
}

// ---------- stream ----------

function setStreamState(word) {
  const el = $("#stream-state");
  el.textContent = word;
  el.dataset.state = word;
}

function openStream() {
  if (S.es) S.es.close();
  clearTimeout(S.esTimer);
  setStreamState("connecting");
  const es = new EventSource("/api/stream");
  S.es = es;
  es.onopen = () => { S.esBackoff = 1000; setStreamState("live"); };
  es.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (_) { return; }
    if (m && typeof m.topic === "string") {
      try { dispatch(m.topic, m.payload); } catch (e) { console.warn("adaptd: message", m.topic, e); }
    }
  };
  es.onerror = () => {
    if (es !== S.es) return;
    if (es.readyState === EventSource.CLOSED) {
      S.es = null;
      setStreamState("offline");
      reconnectLater();
    } else {
      setStreamState("reconnecting");
    }
  };
}

function reconnectLater() {
  const delay = S.esBackoff * (0.5 + Math.random() * 0.5);
  S.esBackoff = Math.min(S.esBackoff * 2, 30000);
  clearTimeout(S.esTimer);
  S.esTimer = setTimeout(async () => {
    try {
      const s = await api("GET", "/api/session");
      applySession(s);
      if (s && s.logged_in) openStream(); else needLogin();
    } catch (e) {
      if (e.status !== 401) reconnectLater();
    }
  }, delay);
}

function dispatch(topic, p) {
  if (topic === "state") return onDeviceState(p);
  if (topic === "stats") return onStats(p);
  if (topic === "training") return onTraining(p);
  const parts = topic.split("/");
  if (parts.length === 2 && !RESERVED.has(parts[0])) {
    const [name, kind] = parts;
    if (kind === "state") return onCamState(name, p);
    if (kind === "detections") return onDetections(name, p);
    if (kind === "objects") return onObjects(name, p);
  } else if (parts.length === 3 && !RESERVED.has(parts[0]) && parts[2] !== "snapshot" && parts[1] !== "samples") {
    return onCount(parts[0], parts[1], parts[2], p);
  }
}

// ---------- device state ----------

function onDeviceState(st) {
  if (!st || typeof st !== "object") return;
  const prev = S.state;
  S.state = st;
  $("#device-name").textContent = st.device || "";
  if (st.device) document.title = "adaptd " + st.device;
  const names = Object.keys(st.cameras || {});
  for (const n of names) onCamState(n, Object.assign({ camera: n }, st.cameras[n]));
  for (const n of Array.from(S.cams.keys())) {
    if (!names.includes(n)) { const c = S.cams.get(n); if (c.el) c.el.remove(); if (c.url) URL.revokeObjectURL(c.url); S.cams.delete(n); }
  }
  $("#no-cameras").hidden = S.cams.size > 0;
  for (const l of Object.values(st.learners || {})) addLabels(Object.keys(l.samples || {}));
  fillCameraSelects();
  if (S.page === "samples") updateSampleCounts();
  if (S.page === "speakers") updateVoices();
  const total = st.samples_total;
  if (S.page === "samples" && prev && prev.samples_total !== total) debounce("samples", 800, () => loadSamples(true));
  if (S.page === "training" && prev && headsChanged(prev, st)) debounce("training", 500, loadTraining);
}

function headsChanged(a, b) {
  const la = a.learners || {}, lb = b.learners || {};
  const keys = new Set([...Object.keys(la), ...Object.keys(lb)]);
  for (const k of keys) if ((la[k] || {}).head_version !== (lb[k] || {}).head_version) return true;
  return a.training !== b.training;
}

function streams(kind) {
  const out = [];
  for (const c of S.cams.values()) if (!kind || camKind(c) === kind) out.push(c.name);
  return out;
}

function fillCameraSelects() {
  const key = streams().map((n) => n + ":" + camKind(S.cams.get(n))).join(",");
  if (key === fillCameraSelects.key) return;
  fillCameraSelects.key = key;
  const fc = $("#filter-camera");
  const keep = fc.value;
  fc.replaceChildren(h("option", { value: "" }, "all cameras"), ...streams("camera").map((n) => h("option", { value: n }, n)));
  fc.value = streams("camera").includes(keep) ? keep : "";
  const uc = $("#upload-camera");
  const keepU = uc.value;
  const all = streams();
  uc.replaceChildren(...all.map((n) => h("option", { value: n }, `${n} (${camKind(S.cams.get(n))})`)));
  if (all.includes(keepU)) uc.value = keepU;
}

function addLabels(list) {
  let changed = false;
  for (const l of list) if (l && l !== "none" && l !== "unknown" && !S.labels.has(l)) { S.labels.add(l); changed = true; }
  if (changed) $("#known-labels").replaceChildren(...Array.from(S.labels).sort().map((l) => h("option", { value: l })));
}

function onStats(st) {
  if (!st || typeof st !== "object") return;
  S.stats = st;
  for (const [n, v] of Object.entries(st.cameras || {})) {
    const c = S.cams.get(n);
    if (c && v) { c.statsFps = v.fps; renderHead(c); }
  }
  if (S.page === "status") renderStreamStats();
}

function onTraining(t) {
  if (!t || typeof t !== "object") return;
  S.training[t.model] = t;
  if (t.status === "started") flash(`Training ${t.model} (${t.trigger || "?"})…`, "info");
  else if (t.status === "finished") flash(`Training ${t.model}: ${t.reason || (t.deployed ? "deployed" : "not deployed")}`, t.deployed ? "ok" : "info");
  else if (t.status === "failed") flash(`Training ${t.model} failed: ${t.error || "?"}`, "error", 15000);
  if (S.page === "training") debounce("training", 300, loadTraining);
}

// ---------- live ----------

function camKind(c) {
  if (c.state && c.state.kind) return c.state.kind;
  return c.mic ? "microphone" : "camera";
}

function cam(name) {
  let c = S.cams.get(name);
  if (c) return c;
  c = {
    name, state: null, dets: new Map(), order: [], last: null, loading: false, pending: false,
    url: null, times: [], statsFps: null, zones: [], counts: new Map(),
    speakers: [], mic: false, el: null, body: null,
  };
  S.cams.set(name, c);
  const el = h("div", { class: "camera", "data-camera": name });
  c.el = el;
  c.nameEl = h("span", { class: "name" }, name);
  c.connEl = h("span", { class: "conn", title: "connection" }, "unknown");
  c.fpsEl = h("span", { class: "fps", title: "frames processed per second" }, "– fps");
  c.latEl = h("span", { class: "latency", title: "inference time" }, "– ms");
  c.subEl = h("div", { class: "cam-sub" });
  c.countsEl = h("div", { class: "counts" });
  el.append(h("div", { class: "cam-head" }, c.nameEl, h("span", { class: "figures" }, c.connEl, c.fpsEl, c.latEl)), c.subEl);
  $("#cameras").append(el);
  $("#no-cameras").hidden = true;
  buildBody(c);
  el.append(c.countsEl);
  fillCameraSelects();
  return c;
}

function buildBody(c) {
  const mic = camKind(c) === "microphone";
  if (c.body && c.body.mic === mic) return;
  if (c.body) c.body.el.remove();
  const b = { mic };
  if (mic) {
    b.el = h("div", { class: "speaker" });
    b.speaker = h("div", { class: "speaker-now" }, "No one has spoken yet.");
    b.detail = h("div", { class: "muted speaker-detail" });
    b.el.append(b.speaker, b.detail);
  } else {
    b.img = h("img", { class: "frame", alt: `${c.name}: latest frame` });
    b.boxes = h("div", { class: "boxes" });
    b.zones = svg("svg", { class: "zones", "aria-hidden": "true", preserveAspectRatio: "none" });
    b.ph = h("div", { class: "placeholder" }, "waiting for a frame…");
    b.wrap = h("div", { class: "frame-wrap" }, b.img, b.zones, b.boxes, b.ph);
    b.cls = h("div", { class: "classification", hidden: true });
    b.el = h("div", { class: "body" }, b.wrap, b.cls);
  }
  c.body = b;
  c.el.classList.toggle("mic", mic);
  c.el.insertBefore(b.el, c.countsEl.parentNode === c.el ? c.countsEl : null);
  if (!mic) drawZones(c);
  else renderSpeaker(c);
}

function connText(st) {
  if (!st) return "unknown";
  const s = st.source_state || {};
  let t;
  switch (s.state) {
    case "reconnecting":
      t = "reconnecting" + (s.attempt ? ` (attempt ${s.attempt}` + (s.retry_in_s ? `, next try in ${s.retry_in_s} s)` : ")") : "") +
        (s.last_error ? ": " + s.last_error : "");
      break;
    case "failed": t = "failed" + (s.error ? ": " + s.error : ""); break;
    case undefined: case null: case "": t = "unknown"; break;
    default: t = String(s.state);
  }
  if (st.enabled === false) t += ", disabled";
  if (st.paused) t += ", paused";
  return t;
}

function onCamState(name, st) {
  if (!st || typeof st !== "object" || RESERVED.has(name)) return;
  const c = cam(name);
  c.state = st;
  c.zones = Array.isArray(st.zones) ? st.zones : [];
  buildBody(c);
  renderHead(c);
  if (!c.body.mic) drawZones(c);
  fillCameraSelects();
}

function renderHead(c) {
  const st = c.state;
  c.connEl.textContent = connText(st);
  c.connEl.dataset.state = (st && st.source_state && st.source_state.state) || "unknown";
  c.connEl.title = "connection: " + c.connEl.textContent;
  let fps = c.statsFps;
  if (!isNum(fps) && c.times.length > 1) {
    const span = (c.times[c.times.length - 1] - c.times[0]) / 1000;
    fps = span > 0 ? (c.times.length - 1) / span : null;
  }
  c.fpsEl.textContent = isNum(fps) ? `${fps.toFixed(fps < 10 ? 1 : 0)} ${camKind(c) === "microphone" ? "utt/s" : "fps"}` : "– fps";
  const ms = c.last && c.last.inference_ms;
  c.latEl.textContent = isNum(ms) ? `${Math.round(ms)} ms` : "– ms";
  const key = st ? [st.label, st.head_version, st.model, st.backend, st.source].join("\u0000") : "";
  if (key === c.subKey) return;
  c.subKey = key;
  const bits = [];
  if (st) {
    if (st.label != null) bits.push(h("span", { class: "stable" }, (camKind(c) === "microphone" ? "speaker: " : "label: ") + st.label));
    if (st.head_version != null) bits.push(h("span", null, `head v${st.head_version}`));
    else bits.push(h("span", null, "no head yet"));
    if (st.model) bits.push(h("span", { class: "muted" }, st.model + (st.backend ? ` (${st.backend})` : "")));
    if (st.source) bits.push(h("span", { class: "muted source" }, st.source));
  }
  c.subEl.replaceChildren(...bits);
}

function onDetections(name, d) {
  if (!d || typeof d !== "object" || RESERVED.has(name)) return;
  const c = cam(name);
  const now = Date.now();
  c.times.push(now);
  while (c.times.length > 1 && now - c.times[0] > 10000) c.times.shift();
  if (d.utterance && !c.mic) { c.mic = true; if (!c.state) buildBody(c); }
  c.last = d;
  if (c.body.mic) {
    onUtterance(c, d);
    renderHead(c);
    return;
  }
  const id = d.frame_id;
  if (c.dets.has(id)) c.order.splice(c.order.indexOf(id), 1);
  c.dets.set(id, d);
  c.order.push(id);
  while (c.order.length > KEEP_DETS) c.dets.delete(c.order.shift());
  renderHead(c);
  const [W, H] = frameSize(c, d);
  if (W && H) c.body.wrap.style.aspectRatio = `${W} / ${H}`;
  renderClassification(c, d);
  if (c.loading) c.pending = true; else loadFrame(c);
}

function frameVisible() {
  return S.ready && S.page === "live" && !document.hidden;
}

async function loadFrame(c) {
  if (!c.body || c.body.mic || !c.last) return;
  if (!frameVisible()) { c.pending = true; return; }
  const b = c.body;
  c.loading = true;
  c.pending = false;
  const want = c.last.frame_id;
  let url = null;
  try {
    const res = await fetch(`/api/cameras/${enc(c.name)}/latest.jpg?t=${enc(want)}`, { credentials: "same-origin", cache: "no-store" });
    if (res.status === 401) { needLogin(); return; }
    if (!res.ok) {
      if (!c.url) { b.ph.hidden = false; b.ph.textContent = res.status === 404 ? "no frame yet" : `frame unavailable (HTTP ${res.status})`; }
      return;
    }
    const hdr = res.headers.get("X-Frame-Id");
    const fid = hdr != null && hdr.trim() !== "" && isFinite(Number(hdr)) ? Number(hdr) : want;
    const blob = await res.blob();
    url = URL.createObjectURL(blob);
    await new Promise((ok, bad) => { b.img.onload = ok; b.img.onerror = () => bad(new Error("the frame could not be decoded")); b.img.src = url; });
    if (c.url) URL.revokeObjectURL(c.url);
    c.url = url;
    url = null;
    b.ph.hidden = true;
    drawBoxes(c, fid);
  } catch (e) {
    if (!c.url) { b.ph.hidden = false; b.ph.textContent = "frame unavailable: " + e.message; }
  } finally {
    if (url) URL.revokeObjectURL(url);
    c.loading = false;
    if (c.pending && frameVisible()) setTimeout(() => loadFrame(c), 0);
  }
}

function frameSize(c, d) {
  const img = c.body && c.body.img;
  const w = (d && isNum(d.width) && d.width > 0) ? d.width : (img && img.naturalWidth) || 0;
  const hh = (d && isNum(d.height) && d.height > 0) ? d.height : (img && img.naturalHeight) || 0;
  return [w, hh];
}

function drawBoxes(c, fid) {
  const b = c.body;
  const d = c.dets.get(fid) || c.last;
  if (!d) return;
  const [W, H] = frameSize(c, d);
  if (W && H) b.wrap.style.aspectRatio = `${W} / ${H}`;
  const boxes = [];
  for (const it of d.items || []) {
    if (!Array.isArray(it.box) || it.box.length < 4 || !W || !H) continue;
    let [x1, y1, x2, y2] = it.box.map(Number);
    x1 = Math.max(0, Math.min(W, x1)); x2 = Math.max(0, Math.min(W, x2));
    y1 = Math.max(0, Math.min(H, y1)); y2 = Math.max(0, Math.min(H, y2));
    const cap = [];
    if (it.suppressed) cap.push("suppressed");
    cap.push(it.label, f2(it.score));
    if (it.head && it.head.label) cap.push(it.head.label);
    if (it.id) cap.push("#" + shortId(it.id));
    const cls = "box" + (it.suppressed ? " suppressed" : it.head && !it.head.unknown ? " named" : "");
    const el = h("div", {
      class: cls, "data-id": it.id || "", "data-label": it.label || "",
      title: (it.id ? `object ${it.id}` : "not tracked yet") + (it.head ? ` · ${it.head.label} ${f2(it.head.score)}${it.head.unknown ? " (unknown)" : ""}` : ""),
    }, h("span", { class: "caption" }, cap.join(" ")));
    el.style.left = (x1 / W) * 100 + "%";
    el.style.top = (y1 / H) * 100 + "%";
    el.style.width = ((x2 - x1) / W) * 100 + "%";
    el.style.height = ((y2 - y1) / H) * 100 + "%";
    if (y1 / H > 0.08) el.classList.add("cap-above");
    if (x1 / W > 0.55) el.classList.add("cap-right");
    boxes.push(el);
  }
  b.boxes.replaceChildren(...boxes);
  b.boxes.dataset.frameId = String(d.frame_id);
  drawZones(c);
}

function drawZones(c) {
  const b = c.body;
  if (!b || b.mic) return;
  let [W, H] = frameSize(c, c.last);
  if (!W || !H) { W = 1000; H = 750; }
  b.zones.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const fs = Math.max(W, H) / 36;
  const kids = [];
  for (const z of c.zones || []) {
    if (!z || !Array.isArray(z.points) || z.points.length < 2) continue;
    const pts = z.points.filter((p) => Array.isArray(p) && isNum(p[0]) && isNum(p[1]));
    if (!pts.length) continue;
    const poly = svg("polygon", { "data-zone": z.name || "", points: pts.map(([x, y]) => `${x * W},${y * H}`).join(" ") }, svg("title", null, `zone ${z.name}`));
    const cx = pts.reduce((s, p) => s + p[0], 0) / pts.length * W;
    const cy = pts.reduce((s, p) => s + p[1], 0) / pts.length * H;
    const label = svg("text", { x: cx, y: cy, "font-size": fs, "text-anchor": "middle", "data-zone": z.name || "" }, z.name || "");
    kids.push(svg("g", { class: "zone" }, poly, label));
  }
  b.zones.replaceChildren(...kids);
}

function renderClassification(c, d) {
  const b = c.body;
  const all = d.items || [];
  if (all.some((it) => Array.isArray(it.box))) { b.cls.hidden = true; return; }
  const items = all;
  if (!items.length) return;
  b.cls.hidden = false;
  b.cls.replaceChildren(...items.map((it) => {
    const hd = it.head;
    return h("div", { class: "class-item" },
      hd ? h("span", { class: "head-label" + (hd.unknown ? " unknown" : "") }, hd.label, " ", h("small", null, f2(hd.score) + (hd.unknown ? " (not confident)" : ""))) : null,
      h("span", { class: "backbone" }, `${it.label} ${f2(it.score)}`),
      hd && hd.head_version != null ? h("span", { class: "muted" }, ` head v${hd.head_version}`) : null);
  }));
}

function onUtterance(c, d) {
  const it = (d.items || [])[0] || {};
  const rec = {
    time: isNum(d.time_unix_ms) ? d.time_unix_ms : Date.now(),
    label: it.head ? it.head.label : null,
    score: it.head ? it.head.score : null,
    unknown: it.head ? !!it.head.unknown : null,
    utt: d.utterance || null,
    frame: d.frame_id,
  };
  c.speakers.unshift(rec);
  if (c.speakers.length > MAX_SPEAKERS) c.speakers.length = MAX_SPEAKERS;
  renderSpeaker(c);
  if (S.page === "speakers") renderRecent(c.name);
}

function speakerWords(r) {
  if (!r.label) return "speech (no voices enrolled yet)";
  if (r.unknown) return `unknown voice${r.label && r.label !== "unknown" ? ` (closest: ${r.label})` : ""} ${f2(r.score)}`;
  return `${r.label} ${f2(r.score)}`;
}
function uttWords(u) {
  if (!u) return "";
  const p = [];
  if (isNum(u.duration_s)) p.push(`${u.duration_s.toFixed(1)} s`);
  if (isNum(u.level_dbfs)) p.push(`${u.level_dbfs.toFixed(1)} dBFS`);
  if (isNum(u.snr_db)) p.push(`SNR ${u.snr_db.toFixed(1)} dB`);
  return p.join(", ");
}

function renderSpeaker(c) {
  const b = c.body;
  if (!b || !b.mic) return;
  const r = c.speakers[0];
  if (!r) { b.speaker.textContent = "No one has spoken yet."; b.detail.textContent = ""; return; }
  b.speaker.replaceChildren("Last speaker: ", h("strong", { class: "who" + (r.unknown ? " unknown" : "") }, speakerWords(r)));
  b.detail.textContent = `${fmtClock(r.time)}${r.utt ? " · " + uttWords(r.utt) : ""}`;
}

function onObjects(name, ev) {
  if (!ev || typeof ev !== "object") return;
  const o = ev.after || ev.before;
  if (!o) return;
  if (ev.type === "new" || ev.type === "end") {
    const t = ev.type === "end" && isNum(o.end_time) ? o.end_time * 1000 : isNum(o.start_time) && ev.type === "new" ? o.start_time * 1000 : Date.now();
    const sub = Array.isArray(o.sub_label) ? o.sub_label[0] : o.sub_label;
    const li = h("li", { class: "obj " + ev.type, "data-id": o.id || "" },
      h("time", null, fmtClock(t)), " ",
      h("span", { class: "type" }, ev.type), " ",
      h("span", { class: "label" }, o.label || "?"),
      sub ? [" ", h("span", { class: "sub-label" }, sub)] : null, " ",
      h("span", { class: "cam" }, o.camera || name),
      o.id ? [" ", h("span", { class: "muted" }, "#" + shortId(o.id))] : null);
    const ul = $("#live-objects");
    ul.prepend(li);
    while (ul.children.length > MAX_OBJECTS) ul.lastElementChild.remove();
    if (S.page === "events") debounce("events", 1000, () => loadEvents("merge"));
  } else if (S.page === "events" && o.id && findEvent(o.id)) {
    debounce("events", 2500, () => loadEvents("merge"));
  }
}

function onCount(name, zone, label, p) {
  if (!S.cams.has(name)) return;
  const c = S.cams.get(name);
  const n = Number(p);
  if (!isFinite(n)) return;
  c.counts.set(zone + "\u0000" + label, n);
  const chips = [];
  for (const [k, v] of Array.from(c.counts.entries()).sort()) {
    if (!v) continue;
    const [z, l] = k.split("\u0000");
    chips.push(h("span", { class: "chip", "data-zone": z, "data-label": l }, (z === "all" ? "" : z + ": ") + `${l} ×${v}`));
  }
  c.countsEl.replaceChildren(...chips);
}

// ---------- routing ----------

function route() {
  let p = location.hash.replace(/^#/, "") || "live";
  if (!PAGES.includes(p)) p = "live";
  const prev = S.page;
  S.page = p;
  for (const sec of $$(".page")) sec.hidden = sec.dataset.page !== p;
  for (const a of $$("#nav a")) {
    if (a.getAttribute("href") === "#" + p) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (prev !== p) {
    // Only the page on screen keeps its lists: its selectors stay unique.
    if (prev === "samples") $("#samples-list").replaceChildren();
    if (prev === "training") $("#training-list").replaceChildren();
    if (prev === "speakers") { stopRecording(true); $("#speakers-list").replaceChildren(); }
    if (prev === "events") { $("#events-list").replaceChildren(); $("#events-more").hidden = true; }
  }
  if (!S.ready) return;
  if (p === "live") for (const c of S.cams.values()) if (c.pending || !c.url) loadFrame(c);
  if (p === "events") { loadEvents("full"); loadLabels(); }
  if (p === "samples") loadSamples(false);
  if (p === "training") loadTraining();
  if (p === "speakers") loadSpeakers();
  if (p === "status") loadStatus();
}

async function loadLabels() {
  try {
    const d = await api("GET", "/api/samples?limit=1");
    S.models = (d && d.models) || [];
    for (const m of S.models) addLabels(Object.keys(m.counts || {}));
  } catch (_) { /* the list of labels is a convenience */ }
}

// ---------- events ----------

function findEvent(id) {
  return $$("#events-list .event").find((e) => e.dataset.id === id) || null;
}

function eventQuery() {
  const q = new URLSearchParams();
  const v = (id) => $(id).value.trim();
  if (v("#filter-camera")) q.set("camera", v("#filter-camera"));
  if (v("#filter-label")) q.set("label", v("#filter-label"));
  if (v("#filter-sub-label")) q.set("sub_label", v("#filter-sub-label"));
  if (v("#filter-zone")) q.set("zone", v("#filter-zone"));
  for (const [id, key] of [["#filter-after", "after"], ["#filter-before", "before"]]) {
    const s = v(id);
    if (!s) continue;
    const t = new Date(s).getTime();
    if (isFinite(t)) q.set(key, String(Math.floor(t / 1000)));
  }
  q.set("limit", "100");
  return q;
}

// mode: "full" (replace), "merge" (add new, update shown), "older" (next page).
async function loadEvents(mode) {
  if (S.page !== "events") return;
  const status = $("#events-status");
  const q = eventQuery();
  if (mode === "older" && S.events.oldest != null) {
    const b = Math.ceil(S.events.oldest);
    if (!q.has("before") || Number(q.get("before")) > b) q.set("before", String(b));
  }
  if (mode !== "merge") status.textContent = "loading…";
  let d;
  try {
    d = await api("GET", "/api/events?" + q.toString());
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
    return;
  }
  if (S.page !== "events") return;
  status.className = "muted";
  const list = Array.isArray(d && d.events) ? d.events : [];
  const box = $("#events-list");
  if (mode === "full") box.replaceChildren();
  let added = 0;
  for (const ev of list) {
    if (!ev || !ev.id) continue;
    const el = findEvent(ev.id);
    if (el) fillEvent(el, ev); else { box.append(eventEl(ev)); added++; }
  }
  sortEvents();
  const all = $$("#events-list .event");
  S.events.oldest = all.length ? Math.min(...all.map((e) => Number(e.dataset.start) || Infinity)) : null;
  if (mode !== "merge") $("#events-more").hidden = list.length < 100 || (mode === "older" && added === 0);
  status.textContent = all.length ? `${all.length} event${all.length === 1 ? "" : "s"}` : "No events match.";
}

function sortEvents() {
  const box = $("#events-list");
  const els = $$("#events-list .event").sort((a, b) => (Number(b.dataset.start) || 0) - (Number(a.dataset.start) || 0));
  let ref = box.firstElementChild;
  for (const el of els) {
    if (el === ref) ref = ref.nextElementSibling;
    else box.insertBefore(el, ref);
  }
}

function eventEl(ev) {
  const el = h("div", { class: "event", "data-id": ev.id });
  const input = h("input", { class: "label-input", type: "text", list: "known-labels", placeholder: "name it…", "aria-label": "label", autocomplete: "off" });
  const reply = h("div", { class: "reply", role: "status", "aria-live": "polite" });
  const nameIt = h("button", { type: "button", class: "name-it" }, "Name it");
  const fp = h("button", { type: "button", class: "false-positive" }, "False positive");
  const drop = h("button", { type: "button", class: "drop danger" }, "Drop");
  const doName = async () => {
    const label = input.value.trim();
    if (!label) { setReply(reply, "error", "type a label first (an existing one or a new one)"); input.focus(); return; }
    const r = await withReply(reply, api("POST", `/api/events/${enc(ev.id)}/label`, { label }));
    if (r) { addLabels([label]); input.value = ""; }
  };
  nameIt.addEventListener("click", doName);
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); doName(); } });
  fp.addEventListener("click", async () => {
    const r = await withReply(reply, api("POST", `/api/events/${enc(ev.id)}/false_positive`));
    if (r) { el.classList.add("fp"); const ev2 = Object.assign({}, el._ev, { false_positive: true }); fillEvent(el, ev2); }
  });
  drop.addEventListener("click", async () => {
    const o = el._ev || ev;
    if (!confirm(`Drop the event “${o.label}” (${o.id}) and its snapshots?`)) return;
    const r = await withReply(reply, api("DELETE", `/api/events/${enc(ev.id)}`));
    if (r) {
      el.remove();
      const n = $$("#events-list .event").length;
      $("#events-status").textContent = `Dropped ${o.id}. ${n} event${n === 1 ? "" : "s"} shown.`;
    }
  });
  el._media = h("div", { class: "event-media" });
  el._info = h("div", { class: "event-info" });
  el.append(el._media, el._info, h("div", { class: "event-actions" }, input, nameIt, fp, drop), reply);
  fillEvent(el, ev);
  return el;
}

function fillEvent(el, ev) {
  el._ev = ev;
  el.dataset.start = isNum(ev.start_time) ? String(ev.start_time) : "0";
  el.classList.toggle("fp", !!ev.false_positive);
  el.classList.toggle("ongoing", ev.end_time == null);
  const cur = el._media.firstElementChild;
  if (ev.snapshot_url) {
    if (!cur || cur.tagName !== "IMG" || cur.getAttribute("src") !== ev.snapshot_url) {
      const img = h("img", { class: "snapshot", src: ev.snapshot_url, alt: `snapshot: ${ev.label}`, loading: "lazy", tabindex: "0", role: "button", title: "show the clean crop" });
      const open = () => {
        const o = el._ev;
        if (o.crop_url) openLightbox(o.crop_url, `${o.label}${subName(o) ? " · " + subName(o) : ""} · ${o.camera} · ${fmtSec(o.start_time)}`, o.snapshot_url);
      };
      img.addEventListener("click", open);
      img.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
      el._media.replaceChildren(img);
    }
  } else if (!cur || !cur.classList.contains("no-snapshot")) {
    el._media.replaceChildren(h("div", { class: "no-snapshot" }, "no snapshot"));
  }
  const sub = Array.isArray(ev.sub_label) ? ev.sub_label : ev.sub_label ? [ev.sub_label, null] : null;
  const zones = (ev.entered_zones && ev.entered_zones.length ? ev.entered_zones : ev.current_zones) || [];
  const tags = [];
  if (ev.false_positive) tags.push(h("span", { class: "tag fp-tag" }, "false positive"));
  if (ev.end_time == null) tags.push(h("span", { class: "tag" }, "ongoing"));
  if (ev.stationary) tags.push(h("span", { class: "tag" }, "stationary"));
  el._info.replaceChildren(
    h("div", { class: "event-title" },
      h("span", { class: "label" }, ev.label || "?"),
      h("span", { class: "sub-label" }, sub ? `${sub[0]}${isNum(sub[1]) ? " " + f2(sub[1]) : ""}` : "no sub-label"),
      ...tags),
    h("dl", null,
      h("dt", null, "Score"), h("dd", { class: "score" }, `${f2(ev.top_score)} best, ${f2(ev.score)} last`),
      h("dt", null, "Camera"), h("dd", { class: "camera-name" }, ev.camera || "–"),
      h("dt", null, "Zones"), h("dd", { class: "zones-list" }, zones.length ? zones.join(", ") : "none"),
      h("dt", null, "Start"), h("dd", { class: "start" }, fmtSec(ev.start_time)),
      h("dt", null, "End"), h("dd", { class: "end" }, ev.end_time == null ? "ongoing" : fmtSec(ev.end_time)),
      h("dt", null, "Id"), h("dd", { class: "muted id" }, ev.id)));
}
const subName = (o) => (Array.isArray(o.sub_label) ? o.sub_label[0] : o.sub_label || "");

function openLightbox(url, caption, full) {
  const lb = $("#lightbox");
  const img = $("img", lb);
  img.src = url;
  img.alt = caption;
  const cap = $(".caption", lb);
  cap.replaceChildren(caption, full ? [" · ", h("a", { href: full, target: "_blank", rel: "noopener" }, "full snapshot")] : null);
  lb.hidden = false;
  $(".close", lb).focus();
}
function closeLightbox() {
  const lb = $("#lightbox");
  lb.hidden = true;
  $("img", lb).removeAttribute("src");
}

// ---------- samples ----------

async function loadSamples(merge) {
  if (S.page !== "samples") return;
  const status = $("#samples-status");
  if (!merge) status.textContent = "loading…";
  let d;
  try {
    d = await api("GET", "/api/samples?limit=100");
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
    return;
  }
  if (S.page !== "samples") return;
  status.className = "muted";
  S.models = (d && d.models) || [];
  for (const m of S.models) addLabels(Object.keys(m.counts || {}));
  const list = $("#samples-list");
  if (!merge) list.replaceChildren();
  for (const m of S.models) learnerSection(m);
  for (const s of (d && d.samples) || []) addSample(s, true);
  for (const sec of $$("section.learner", list)) sortGroups(sec);
  updateSampleCounts();
  status.textContent = S.models.length ? "" : "No learners: no stream has a model that learns.";
}

function learnerSection(m) {
  const list = $("#samples-list");
  let sec = $$("section.learner", list).find((s) => s.dataset.model === m.model);
  if (sec) { sec._m = m; return sec; }
  sec = h("section", { class: "learner card", "data-model": m.model });
  sec._m = m;
  sec._counts = h("div", { class: "counts" });
  sec._groups = h("div", { class: "groups" });
  sec._reply = h("div", { class: "reply", role: "status", "aria-live": "polite" });
  sec._more = h("button", { type: "button", class: "more" }, "Load older samples");
  sec._more.addEventListener("click", () => loadOlderSamples(sec));
  sec.append(
    h("h2", null, m.model, " ", h("small", { class: "muted" }, `${m.kind || "?"} · ${(m.cameras || []).join(", ") || "no stream"} · ${m.head_version != null ? "head v" + m.head_version : "no head yet"}`)),
    sec._counts, sec._reply, sec._groups, sec._more);
  list.append(sec);
  return sec;
}

function learnerCounts(model) {
  const l = S.state && S.state.learners && S.state.learners[model];
  if (l && l.samples) return l.samples;
  const m = S.models.find((x) => x.model === model);
  return (m && m.counts) || {};
}

function updateSampleCounts() {
  for (const sec of $$("#samples-list section.learner")) {
    const counts = learnerCounts(sec.dataset.model);
    const entries = Object.entries(counts).sort((a, b) => a[0].localeCompare(b[0]));
    const total = entries.reduce((s, [, n]) => s + n, 0);
    sec._counts.replaceChildren(h("span", { class: "total" }, `${total} sample${total === 1 ? "" : "s"}`),
      ...entries.map(([l, n]) => h("span", { class: "chip", "data-label": l }, `${l} ${n}`)));
    for (const [l] of entries) group(sec, l);
    for (const g of $$("div.label-group", sec)) {
      const n = counts[g.dataset.label] || 0;
      const shown = $$("div.sample", g).length;
      g._title.textContent = `${g.dataset.label} — ${n} stored${shown < n ? `, ${shown} shown` : ""}`;
      if (!n && !shown) g.remove();
    }
    sortGroups(sec);
    const shown = $$("div.sample", sec).length;
    sec._more.hidden = shown >= total || sec._exhausted;
  }
}

function group(sec, label) {
  let g = $$("div.label-group", sec).find((x) => x.dataset.label === label);
  if (g) return g;
  g = h("div", { class: "label-group", "data-label": label });
  g._title = h("h3", null, label);
  g._gallery = h("div", { class: "gallery" });
  g.append(g._title, g._gallery);
  sec._groups.append(g);
  return g;
}
function sortGroups(sec) {
  const gs = $$("div.label-group", sec).sort((a, b) => a.dataset.label.localeCompare(b.dataset.label));
  let ref = sec._groups.firstElementChild;
  for (const g of gs) { if (g === ref) ref = ref.nextElementSibling; else sec._groups.insertBefore(g, ref); }
}

function addSample(s) {
  if (!s || s.id == null) return;
  const sec = learnerSection(S.models.find((m) => m.model === s.model) || { model: s.model, counts: {} });
  if ($$("div.sample", sec).some((e) => e.dataset.id === String(s.id))) return;
  const g = group(sec, s.label);
  const el = sampleEl(sec, s);
  // newest first within a label
  const after = $$("div.sample", g._gallery).find((e) => Number(e.dataset.id) < Number(s.id));
  g._gallery.insertBefore(el, after || null);
  sec._oldest = sec._oldest == null ? s.id : Math.min(sec._oldest, s.id);
}

function sampleEl(sec, s) {
  const el = h("div", { class: "sample", "data-id": String(s.id) });
  el._s = s;
  const pic = s.thumbnail_url
    ? h("img", { src: s.thumbnail_url, alt: `sample ${s.id}: ${s.label}`, loading: "lazy" })
    : h("div", { class: "voice" }, h("span", { class: "voice-icon", "aria-hidden": "true" }, "♪"), h("span", null, "voice sample"),
        s.clip_url ? h("audio", { class: "clip", controls: true, preload: "none", src: s.clip_url, "aria-label": `voice sample ${s.id}: ${s.label}` }) : null);
  const meta = h("div", { class: "meta" }, `#${s.id} · ${s.split || "?"} · ${sourceText(s.source)}`, h("br"), fmtDate(s.created_unix_ms));
  const relabel = h("button", { type: "button", class: "relabel" }, "Relabel");
  const del = h("button", { type: "button", class: "delete danger" }, "Delete");
  relabel.addEventListener("click", async () => {
    const cur = el._s;
    const label = (prompt(`New label for sample #${cur.id} (now “${cur.label}”):`, "") || "").trim();
    if (!label || label === cur.label) return;
    const r = await withReply(sec._reply, api("POST", `/api/samples/${enc(cur.model)}/${enc(cur.id)}/relabel`, { label }));
    if (!r) return;
    el.remove();
    addLabels([label]);
    addSample(Object.assign({}, cur, { id: r.id != null ? r.id : cur.id, label: r.label || label }));
    setReply(sec._reply, "ok", `sample #${cur.id} is now “${r.label || label}” (#${r.id != null ? r.id : cur.id})`);
    updateSampleCounts();
  });
  del.addEventListener("click", async () => {
    const cur = el._s;
    if (!confirm(`Delete sample #${cur.id} (“${cur.label}”)?`)) return;
    const r = await withReply(sec._reply, api("DELETE", `/api/samples/${enc(cur.model)}/${enc(cur.id)}`));
    if (!r) return;
    el.remove();
    setReply(sec._reply, "ok", `deleted sample #${cur.id} (“${cur.label}”)`);
    updateSampleCounts();
  });
  el.append(pic, h("div", { class: "sample-label" }, s.label), meta, h("div", { class: "actions" }, relabel, del));
  return el;
}

async function loadOlderSamples(sec) {
  const q = new URLSearchParams({ model: sec.dataset.model, limit: "100" });
  if (sec._oldest != null) q.set("before", String(sec._oldest));
  sec._more.disabled = true;
  try {
    const d = await api("GET", "/api/samples?" + q.toString());
    const list = ((d && d.samples) || []).filter((s) => s.model === sec.dataset.model);
    for (const s of list) addSample(s);
    if (list.length < 100) sec._exhausted = true;
    updateSampleCounts();
  } catch (e) {
    setReply(sec._reply, "error", e.message);
  } finally {
    sec._more.disabled = false;
  }
}

function fileType(f) {
  if (f.type) return f.type === "audio/x-wav" || f.type === "audio/wave" ? "audio/wav" : f.type;
  const n = f.name.toLowerCase();
  if (n.endsWith(".wav")) return "audio/wav";
  if (n.endsWith(".png")) return "image/png";
  return "image/jpeg";
}

async function uploadFiles(files, label, camera, ul) {
  ul.replaceChildren();
  let ok = 0;
  for (const f of files) {
    const msg = h("span", { class: "msg" }, "uploading…");
    const li = h("li", { class: "pending" }, h("span", { class: "file" }, f.name || "recording.wav"), ": ", msg);
    ul.append(li);
    try {
      const d = await api("POST", `/api/samples/${enc(label)}?camera=${enc(camera)}&name=${enc(f.name || "recording.wav")}`, undefined, { raw: f, type: fileType(f) });
      li.className = "ok";
      msg.textContent = describe(d);
      ok++;
    } catch (e) {
      li.className = "error";
      msg.textContent = e.message;
      if (e.status === 401) break;
    }
  }
  if (ok) addLabels([label]);
  return ok;
}

async function onUpload(ev) {
  ev.preventDefault();
  const camera = $("#upload-camera").value;
  const label = $("#upload-label").value.trim();
  const input = $("#upload-files");
  const files = Array.from(input.files || []);
  const ul = $("#upload-results");
  if (!camera || !label || !files.length) {
    ul.replaceChildren(h("li", { class: "error" }, !camera ? "no stream to upload to yet" : !label ? "type a label first" : "choose one or more files"));
    return;
  }
  const btn = $("#upload-submit");
  btn.disabled = true;
  try {
    const ok = await uploadFiles(files, label, camera, ul);
    if (ok) input.value = "";
    if (ok && S.page === "samples") loadSamples(true);
  } finally {
    btn.disabled = false;
  }
}

// ---------- training ----------

async function loadTraining() {
  if (S.page !== "training") return;
  const status = $("#training-status");
  status.textContent = "loading…";
  let d;
  try {
    d = await api("GET", "/api/training");
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
    return;
  }
  if (S.page !== "training") return;
  status.className = "muted";
  const learners = (d && d.learners) || [];
  const open = {};
  for (const det of $$("#training-list details[data-key]")) open[det.dataset.key] = det.open;
  $("#training-list").replaceChildren(...learners.map((l) => trainingSection(l, open)));
  status.textContent = learners.length ? "" : "No learners: no stream has a model that learns.";
}

function trainingSection(l, open) {
  const cams = l.cameras || [];
  const camera = cams[0];
  const key = "training:" + l.model;
  const reply = h("div", { class: "reply", role: "status", "aria-live": "polite" });
  const saved = S.replies[key];
  if (saved) setReply(reply, saved.cls, saved.text);
  const train = h("button", { type: "button", class: "train-now", disabled: !camera, title: camera ? `train ${l.model} now (force)` : "no stream uses this learner" }, "Train now");
  train.addEventListener("click", async () => {
    const r = await withReply(reply, api("POST", "/api/cmd/train", { camera, force: true }), key);
    if (r) debounce("training", 1500, loadTraining);
  });
  const last = S.training[l.model];
  let lastWords = null;
  if (last) {
    lastWords = last.status === "started" ? `running (${last.trigger || "?"})…`
      : last.status === "failed" ? `last run failed: ${last.error || "?"}`
      : last.status === "finished" ? `last run: ${last.reason || (last.deployed ? "deployed" : "not deployed")}` : null;
  }
  const counts = Object.entries(l.counts || {}).sort((a, b) => a[0].localeCompare(b[0]));
  const heads = (l.heads || []).slice().sort((a, b) => (b.version || 0) - (a.version || 0));
  return h("section", { class: "learner card", "data-model": l.model },
    h("h2", null, l.model, " ", h("small", { class: "muted" }, `${l.kind || "?"} · ${cams.join(", ") || "no stream"}`)),
    h("p", null,
      h("span", { class: "state-word" }, l.training ? "training now" : "idle"), " · ",
      l.head_version != null ? `head v${l.head_version} in service` : "no head in service",
      lastWords ? [" · ", h("span", { class: "muted" }, lastWords)] : null),
    h("div", { class: "counts" }, counts.length ? counts.map(([k, n]) => h("span", { class: "chip" }, `${k} ${n}`)) : h("span", { class: "muted" }, "no samples")),
    h("div", { class: "toolbar" }, train),
    reply,
    heads.length ? heads.map((hd) => headEl(l, hd, camera, reply, key, open)) : h("p", { class: "muted" }, "No heads trained yet."));
}

function headStatus(hd) {
  if (hd.current) return "in service";
  if (hd.deployed) return "deployed before, not in service";
  return "rejected: " + (hd.deploy_reason || "not deployed");
}

function headEl(l, hd, camera, reply, key, open) {
  const rep = hd.report || {};
  const m = rep.metrics || {};
  const perClass = Array.isArray(m.per_class) ? m.per_class : [];
  const classes = Array.isArray(hd.classes) && hd.classes.length ? hd.classes : perClass.map((p) => p.label);
  const dkey = `${l.model}:${hd.version}`;
  const el = h("div", { class: "head" + (hd.current ? " current" : hd.deployed ? " retired" : " rejected"), "data-version": String(hd.version) });
  const title = h("div", { class: "head-title" },
    h("h3", null, `v${hd.version}`),
    h("span", { class: "head-status" }, headStatus(hd)),
    h("span", { class: "muted" }, fmtSec(hd.created_unix)));
  const metrics = h("div", { class: "metrics" },
    h("span", null, "Accuracy ", h("span", { class: "accuracy" }, f3(m.accuracy))),
    h("span", null, "Macro-F1 ", h("span", { class: "macro-f1" }, f3(m.macro_f1))),
    isNum(rep.train_time_ms) ? h("span", { class: "muted" }, `trained in ${(rep.train_time_ms / 1000).toFixed(1)} s`) : null,
    rep.epochs_run != null ? h("span", { class: "muted" }, `${rep.epochs_run} epochs${rep.stopped_because ? " (" + rep.stopped_because + ")" : ""}`) : null);
  const details = h("details", { "data-key": dkey, open: open[dkey] !== false },
    h("summary", null, "Per class and confusion matrix (held-out samples)"),
    h("div", { class: "head-tables" },
      perClass.length ? h("div", { class: "scroll" }, perClassTable(perClass, rep)) : h("p", { class: "muted" }, "No per-class figures in the report."),
      classes.length && Array.isArray(m.confusion) ? h("div", { class: "scroll" }, confusionTable(classes, m.confusion)) : h("p", { class: "muted" }, "No confusion matrix in the report.")));
  el.append(title);
  if (hd.deploy_reason && (hd.deployed || hd.current)) el.append(h("p", { class: "reason muted" }, hd.deploy_reason));
  el.append(metrics, details);
  if (!hd.current) {
    const rb = h("button", { type: "button", class: "rollback", "data-version": String(hd.version), disabled: !camera, title: camera ? `put v${hd.version} in service` : "no stream uses this learner" }, `Roll back to v${hd.version}`);
    rb.addEventListener("click", async () => {
      const r = await withReply(reply, api("POST", "/api/cmd/rollback", { camera, version: hd.version }), key);
      if (r) debounce("training", 500, loadTraining);
    });
    el.append(h("div", { class: "toolbar" }, rb));
  }
  return el;
}

function perClassTable(rows, rep) {
  // The report's per-class counts are arrays in the order of its classes.
  const byClass = (counts) => {
    const out = {};
    if (Array.isArray(counts) && Array.isArray(rep.classes)) rep.classes.forEach((c, i) => { out[c] = counts[i]; });
    else if (counts && typeof counts === "object") Object.assign(out, counts);
    return out;
  };
  const tr = byClass(rep.samples_per_class_train), ho = byClass(rep.samples_per_class_holdout);
  const hasCounts = Object.keys(tr).length || Object.keys(ho).length;
  return h("table", { class: "per-class" },
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "class"), h("th", { scope: "col" }, "precision"), h("th", { scope: "col" }, "recall"),
      h("th", { scope: "col" }, "f1"), h("th", { scope: "col" }, "support"), hasCounts ? h("th", { scope: "col" }, "train / held out") : null)),
    h("tbody", null, rows.map((r) => h("tr", { "data-label": r.label },
      h("th", { scope: "row" }, r.label), h("td", { class: "precision" }, f3(r.precision)), h("td", { class: "recall" }, f3(r.recall)),
      h("td", { class: "f1" }, f3(r.f1)), h("td", { class: "support" }, r.support != null ? String(r.support) : "–"),
      hasCounts ? h("td", null, `${tr[r.label] != null ? tr[r.label] : "–"} / ${ho[r.label] != null ? ho[r.label] : "–"}`) : null))));
}

function confusionTable(classes, conf) {
  return h("table", { class: "confusion" },
    h("caption", null, "Confusion: rows true, columns predicted"),
    h("thead", null, h("tr", null, h("th", { class: "corner", scope: "col" }, "true \\ predicted"), classes.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", null, classes.map((tc, i) => {
      const row = Array.isArray(conf[i]) ? conf[i] : [];
      const sum = row.reduce((s, v) => s + (Number(v) || 0), 0);
      return h("tr", null, h("th", { scope: "row" }, tc), classes.map((pc, j) => {
        const n = Number(row[j]) || 0;
        const frac = sum ? n / sum : 0;
        const td = h("td", { class: i === j ? "diag" : "", "data-count": String(n), "data-true": tc, "data-predicted": pc,
          title: `true ${tc}, predicted ${pc}: ${n}${sum ? ` (${Math.round(frac * 100)}% of ${tc})` : ""}` }, String(n));
        td.style.backgroundColor = `rgba(${i === j ? "46, 160, 67" : "218, 54, 51"}, ${(frac * 0.85).toFixed(3)})`;
        return td;
      }));
    })));
}

// ---------- speakers ----------

async function loadSpeakers() {
  if (S.page !== "speakers") return;
  const status = $("#speakers-status");
  status.textContent = "loading…";
  let models = null;
  try {
    const d = await api("GET", "/api/samples?limit=1");
    models = (d && d.models) || [];
    S.models = models;
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
  }
  if (S.page !== "speakers") return;
  let audio = (models || []).filter((m) => m.kind === "audio");
  if (!models) {
    // The API failed: fall back to what the state says.
    audio = streams("microphone").map((n) => {
      const st = S.cams.get(n).state || {};
      return { model: st.embedding_model || st.model || "?", kind: "audio", cameras: [n], counts: learnerCounts(st.embedding_model) };
    });
  } else {
    status.className = "muted";
    status.textContent = "";
  }
  const secs = [];
  for (const m of audio) for (const cname of m.cameras || []) secs.push(speakerSection(m, cname));
  $("#speakers-list").replaceChildren(...secs);
  if (!secs.length && models) status.textContent = "No microphone with a speaker model.";
}

function speakerSection(m, camera) {
  const sec = h("section", { class: "speakers card", "data-camera": camera, "data-model": m.model });
  const c = S.cams.get(camera);
  sec._voices = h("ul", { class: "voices" });
  const label = h("input", { type: "text", class: "enrol-label", required: true, list: "known-labels", placeholder: "alice", autocomplete: "off", "aria-label": "name of the voice" });
  const file = h("input", { type: "file", class: "enrol-file", accept: "audio/wav,.wav", multiple: true, "aria-label": "WAV files" });
  const results = h("ul", { class: "results enrol-results" });
  const send = h("button", { type: "submit", class: "enrol-submit" }, "Upload WAV");
  const record = h("button", { type: "button", class: "record" }, `Record ${RECORD_S} s`);
  const recStatus = h("span", { class: "rec-status muted", role: "status", "aria-live": "polite" });
  const meter = h("meter", { class: "level", min: "0", max: "1", value: "0", hidden: true, "aria-label": "input level" });
  const preview = h("div", { class: "preview" });
  const form = h("form", { class: "enrol" },
    h("label", null, "Name ", label), h("label", null, "WAV ", file), send, record, meter, recStatus, preview, results);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const l = label.value.trim();
    const files = Array.from(file.files || []);
    if (!l) { results.replaceChildren(h("li", { class: "error" }, "type the speaker's name first")); return; }
    if (!files.length) { results.replaceChildren(h("li", { class: "error" }, "choose a WAV file, or record one")); return; }
    send.disabled = true;
    try { if (await uploadFiles(files, l, camera, results)) file.value = ""; } finally { send.disabled = false; }
  });
  record.addEventListener("click", () => {
    if (S.rec && S.rec.camera === camera) { S.rec.finish(); return; }
    const l = label.value.trim();
    if (!l) { results.replaceChildren(h("li", { class: "error" }, "type the speaker's name first")); label.focus(); return; }
    record.disabled = true;
    startRecording({ camera, label: l, button: record, status: recStatus, meter, preview, results });
  });
  sec._recent = h("ul", { class: "recent-speakers" });
  sec.append(
    h("h2", null, camera, " ", h("small", { class: "muted" }, `${m.model} · ${c ? connText(c.state) : "unknown"}`)),
    h("h3", null, "Enrolled voices"), sec._voices,
    h("h3", null, "Enrol a voice"),
    h("p", { class: "muted" }, "Upload WAV files of one person speaking, or record a few seconds here (say a sentence or two)."),
    form,
    h("h3", null, "Who spoke recently"), sec._recent);
  fillVoices(sec, m.model);
  fillRecent(sec, camera);
  return sec;
}

function fillVoices(sec, model) {
  const m = S.models.find((x) => x.model === model);
  const counts = (S.state && S.state.learners && S.state.learners[model] && S.state.learners[model].samples) || (m && m.counts) || {};
  const entries = Object.entries(counts).sort((a, b) => a[0].localeCompare(b[0]));
  sec._voices.replaceChildren(...(entries.length
    ? entries.map(([l, n]) => h("li", { "data-label": l }, h("strong", null, l), ` — ${n} sample${n === 1 ? "" : "s"}`))
    : [h("li", { class: "muted" }, "No voices enrolled yet.")]));
}
function updateVoices() {
  for (const sec of $$("#speakers-list section.speakers")) fillVoices(sec, sec.dataset.model);
}

function fillRecent(sec, camera) {
  const c = S.cams.get(camera);
  const list = c ? c.speakers : [];
  sec._recent.replaceChildren(...(list.length
    ? list.map((r) => h("li", { class: r.unknown ? "unknown" : "" }, h("time", null, fmtClock(r.time)), " ", h("strong", null, speakerWords(r)), r.utt ? h("span", { class: "muted" }, " · " + uttWords(r.utt)) : null))
    : [h("li", { class: "muted" }, "No one has spoken since this page was opened.")]));
}
function renderRecent(camera) {
  for (const sec of $$("#speakers-list section.speakers")) if (sec.dataset.camera === camera) fillRecent(sec, camera);
}

async function startRecording(o) {
  try { await captureAudio(o); } finally { o.button.disabled = false; }
}
async function captureAudio(o) {
  if (S.rec) S.rec.finish(true);
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    o.results.replaceChildren(h("li", { class: "error" }, "This browser gives no microphone to this page: recording needs https:// or http://127.0.0.1 (or upload a WAV file)."));
    return;
  }
  let stream;
  try {
    stream = await md.getUserMedia({ audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  } catch (e) {
    o.results.replaceChildren(h("li", { class: "error" }, `no microphone: ${e.name || ""} ${e.message || e}`.trim()));
    return;
  }
  const AC = window.AudioContext || window.webkitAudioContext;
  const ctx = new AC();
  const src = ctx.createMediaStreamSource(stream);
  const rate = ctx.sampleRate;
  const max = Math.round(rate * RECORD_S);
  const chunks = [];
  let n = 0, done = false, peak = 0, shownTenth = -1;
  const rec = { camera: o.camera, finish() {} };
  const onData = (x) => {
    if (done) return;
    const take = Math.min(x.length, max - n);
    chunks.push(new Float32Array(x.subarray(0, take)));
    n += take;
    for (let i = 0; i < take; i++) { const a = Math.abs(x[i]); if (a > peak) peak = a; }
    const tenth = Math.floor((n / rate) * 10);
    if (tenth !== shownTenth) {
      shownTenth = tenth;
      o.meter.value = peak;
      peak = 0;
      o.status.textContent = `recording… ${(tenth / 10).toFixed(1)} s`;
    }
    if (n >= max) rec.finish();
  };
  let proc;
  try {
    // An AudioWorklet (this very script, see its top), else the older ScriptProcessor.
    if (!ctx.audioWorklet || typeof AudioWorkletNode !== "function") throw new Error("no AudioWorklet");
    await ctx.audioWorklet.addModule("/app.js");
    proc = new AudioWorkletNode(ctx, "adaptd-capture", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit" });
    proc.port.onmessage = (e) => onData(e.data);
  } catch (_) {
    proc = ctx.createScriptProcessor(4096, 1, 1);
    proc.onaudioprocess = (e) => onData(e.inputBuffer.getChannelData(0));
  }
  const mute = ctx.createGain();
  mute.gain.value = 0;
  S.rec = rec;
  o.button.textContent = "Stop and send";
  o.button.classList.add("recording");
  o.meter.hidden = false;
  o.status.textContent = "recording… 0.0 s";
  src.connect(proc);
  proc.connect(mute);
  mute.connect(ctx.destination);
  const timer = setTimeout(() => rec.finish(), RECORD_S * 1000 + 500);
  rec.finish = async (cancel) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    S.rec = null;
    try { src.disconnect(); proc.disconnect(); mute.disconnect(); } catch (_) { /* already */ }
    for (const t of stream.getTracks()) t.stop();
    ctx.close().catch(() => {});
    o.button.textContent = `Record ${RECORD_S} s`;
    o.button.classList.remove("recording");
    o.meter.hidden = true;
    if (cancel || !o.button.isConnected) { o.status.textContent = ""; return; }
    if (!n) { o.status.textContent = "nothing was recorded"; return; }
    const pcm = new Float32Array(n);
    let off = 0;
    for (const ch of chunks) { pcm.set(ch, off); off += ch.length; }
    const blob = new Blob([wav16(pcm, rate)], { type: "audio/wav" });
    const file = new File([blob], `${o.label}-${new Date().toISOString().replace(/[:.]/g, "-")}.wav`, { type: "audio/wav" });
    const url = URL.createObjectURL(blob);
    const audio = h("audio", { controls: true, src: url });
    const old = o.preview.querySelector("audio");
    if (old && old.src.startsWith("blob:")) URL.revokeObjectURL(old.src);
    o.preview.replaceChildren(audio);
    o.status.textContent = `recorded ${(n / rate).toFixed(1)} s at ${rate} Hz; sending…`;
    const ok = await uploadFiles([file], o.label, o.camera, o.results);
    o.status.textContent = ok ? `recorded ${(n / rate).toFixed(1)} s; sent` : `recorded ${(n / rate).toFixed(1)} s; not stored`;
  };
}

function stopRecording(cancel) {
  if (S.rec) S.rec.finish(cancel);
}

// Mono float samples to a 16-bit PCM WAV file.
function wav16(samples, rate) {
  const buf = new ArrayBuffer(44 + samples.length * 2);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + samples.length * 2, true); str(8, "WAVE");
  str(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  str(36, "data"); v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return buf;
}

// ---------- status ----------

async function loadStatus() {
  if (S.page !== "status") return;
  const status = $("#status-status");
  status.textContent = "loading…";
  let d;
  try {
    d = await api("GET", "/api/status");
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
    return;
  }
  status.className = "muted";
  status.textContent = `as of ${new Date().toLocaleTimeString()}`;
  const mq = d.mqtt || {};
  const row = (k, v, cls) => [h("dt", null, k), h("dd", cls ? { class: cls } : null, v)];
  const models = Array.isArray(d.models) ? d.models : [];
  $("#status-info").replaceChildren(
    h("dl", { class: "facts" },
      row("Version", d.version || "–", "version"),
      row("Device", d.device_id || "–", "device-id"),
      row("Uptime", fmtDuration(d.uptime_s), "uptime"),
      row("MQTT", (mq.connected ? "connected" : "not connected") + `, ${mq.reconnects != null ? mq.reconnects : "?"} reconnect${mq.reconnects === 1 ? "" : "s"}`, "mqtt"),
      row("State directory", `${d.state_dir || "–"} (${fmtBytes(d.state_dir_bytes)})`, "state-dir"),
      row("Free disk", fmtBytes(d.disk_free_bytes), "disk-free"),
      row("Resident memory", fmtBytes(d.resident_bytes), "memory"),
      S.stats && isNum(S.stats.cpu_temp_c) ? row("CPU temperature", `${S.stats.cpu_temp_c.toFixed(1)} °C`) : null),
    h("h2", null, "Models"),
    h("div", { class: "scroll" }, h("table", { class: "models" },
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "model"), h("th", { scope: "col" }, "backend"), h("th", { scope: "col" }, "streams"))),
      h("tbody", null, models.length ? models.map((m) => h("tr", null, h("td", null, m.model || "–"), h("td", null, m.backend || "–"), h("td", null, (m.cameras || []).join(", ") || "–")))
        : h("tr", null, h("td", { colspan: "3", class: "muted" }, "no models loaded"))))));
  const log = $("#log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = (Array.isArray(d.log) ? d.log : []).join("\n");
  if (atEnd || !log.dataset.seen) log.scrollTop = log.scrollHeight;
  log.dataset.seen = "1";
  renderStreamStats();
}

function renderStreamStats() {
  const st = S.stats;
  if (!st || !st.cameras) return;
  const cols = [["fps", "fps", (v) => f2(v)], ["frames", "frames"], ["skipped_frames", "skipped"], ["throttled_frames", "throttled"],
    ["motion_skipped_frames", "no motion"], ["source_dropped_frames", "source dropped"], ["decode_errors", "decode errors"],
    ["reconnects", "reconnects"], ["inference_ms_p50", "inference p50 ms", (v) => (isNum(v) ? v.toFixed(1) : "–")],
    ["inference_ms_p95", "p95 ms", (v) => (isNum(v) ? v.toFixed(1) : "–")], ["source_state", "source"],
    ["paused", "paused", (v) => (v ? "yes" : "no")], ["head_version", "head", (v) => (v != null ? "v" + v : "none")],
    ["head_macro_f1", "head macro-F1", (v) => f3(v)]];
  $("#status-streams").replaceChildren(
    h("p", { class: "muted" }, `stats: up ${fmtDuration(st.uptime_s)}, training ${st.training || "?"}, MQTT reconnects ${st.mqtt_reconnects != null ? st.mqtt_reconnects : "?"}, dropped ${st.mqtt_dropped != null ? st.mqtt_dropped : "?"}`),
    h("table", { class: "stats" },
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "stream"), cols.map((c) => h("th", { scope: "col" }, c[1])))),
      h("tbody", null, Object.entries(st.cameras).map(([n, v]) => h("tr", null, h("th", { scope: "row" }, n),
        cols.map(([k, , fmt]) => h("td", null, fmt ? fmt(v[k]) : v[k] != null ? String(v[k]) : "–")))))));
}

// ---------- wiring ----------

function wire() {
  $("#login-form").addEventListener("submit", onLogin);
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (_) { /* logged out anyway */ }
    applySession({ auth: "password", logged_in: false, csrf: null });
    needLogin();
  });
  window.addEventListener("hashchange", route);
  $("#events-filters").addEventListener("submit", (e) => { e.preventDefault(); loadEvents("full"); });
  for (const id of ["#filter-camera", "#filter-after", "#filter-before"]) $(id).addEventListener("change", () => loadEvents("full"));
  $("#events-more").addEventListener("click", () => loadEvents("older"));
  $("#upload-form").addEventListener("submit", onUpload);
  $("#samples-refresh").addEventListener("click", () => loadSamples(false));
  $("#training-refresh").addEventListener("click", loadTraining);
  $("#speakers-refresh").addEventListener("click", loadSpeakers);
  $("#status-refresh").addEventListener("click", loadStatus);
  const lb = $("#lightbox");
  lb.addEventListener("click", (e) => { if (e.target === lb || e.target.classList.contains("close")) closeLightbox(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !lb.hidden) closeLightbox(); });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && S.page === "live") for (const c of S.cams.values()) if (c.pending) loadFrame(c);
  });
  window.addEventListener("pagehide", () => { if (S.es) S.es.close(); });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
})();
