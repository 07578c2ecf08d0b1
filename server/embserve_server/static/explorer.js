// embserve explorer: one page over /api/{tables,map,analogy,timeline}. No dependencies, no network beyond
// this server. Keys are only ever inserted as text (textContent), never as HTML.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PAD = { left: 40, right: 110, top: 36, bottom: 36 };  // room for labels around the points
let W = 1000, H = 720;
const $ = (id) => document.getElementById(id);
const state = { map: null, request: 0, versions: {}, steps: null };
// The bearer token, when the server asks for one: this tab's session storage only (never a URL or
// a cookie), sent in the Authorization header of each API call.
const TOKEN_KEY = "embserve-token";

class AuthRequired extends Error {}

function api(endpoint, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null) query.set(k, v);
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  return fetch(`/api/${endpoint}?${query}`, { headers, credentials: "omit", cache: "no-store" }).then(async (resp) => {
    const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);  // missing or no longer valid: ask again
      askToken(token ? body.error : "");
      throw new AuthRequired(body.error || "a token is required");
    }
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
    return body;
  });
}

function askToken(message) {
  $("token-form").hidden = false;
  showError(message ? new Error(message) : null);
  $("token").focus();
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- neighbour lists ------------------------------------------------------------------------

function renderList(list, items) {
  list.replaceChildren();
  for (const [i, item] of items.entries()) {
    const li = el("li", { "data-key": item.key, title: `${item.key}: ${item.score.toFixed(4)}` });
    const bar = el("span", { class: "bar" });
    const fill = el("i");
    fill.style.width = `${Math.max(0, Math.min(1, item.score)) * 100}%`;
    bar.append(fill);
    li.append(el("span", { class: "rank" }, `${i + 1}`), el("span", { class: "key" }, item.key), bar,
      el("span", { class: "score" }, item.score.toFixed(3)));
    li.addEventListener("click", () => recentre(item.key));
    li.addEventListener("mouseenter", () => highlight(item.key, true));
    li.addEventListener("mouseleave", () => highlight(item.key, false));
    list.append(li);
  }
}

// ---- the map --------------------------------------------------------------------------------

function fit(points) {
  // Fill the drawing area with the points' bounding box, one scale for x and y so that
  // distances on screen stay proportional to distances in the projection.
  const svg = $("map");
  W = Math.max(320, svg.clientWidth || 1000);
  H = Math.max(240, svg.clientHeight || 720);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const scale = Math.min((W - PAD.left - PAD.right) / Math.max(x1 - x0, 1e-9), (H - PAD.top - PAD.bottom) / Math.max(y1 - y0, 1e-9));
  const ox = PAD.left + (W - PAD.left - PAD.right - scale * (x1 - x0)) / 2;
  const oy = PAD.top + (H - PAD.top - PAD.bottom - scale * (y1 - y0)) / 2;
  return (p) => [ox + (p.x - x0) * scale, oy + (y1 - p.y) * scale];
}

function placeLabels(points) {
  // Greedy: centre, then neighbours by rank, then the rest; a label that would overlap one
  // already placed tries the other sides of its point, else stays hidden until hovered.
  const placed = points.map((p) => {  // the dots themselves are obstacles too
    const r = radius(p);
    return [p.sx - r, p.sy - r, p.sx + r, p.sy + r, p];
  });
  const order = [...points].sort((a, b) => prio(a) - prio(b));
  const spots = [[9, 5, "start"], [-9, 5, "end"], [0, -11, "middle"], [0, 20, "middle"]];
  for (const p of order) {
    const size = p.role === "centre" ? 19 : p.role === "neighbour" ? 14 : 11.5;
    const w = p.key.length * size * 0.58, h = size;
    p.label = null;
    for (const [dx, dy, anchor] of spots) {
      const x0 = anchor === "start" ? p.sx + dx : anchor === "end" ? p.sx + dx - w : p.sx - w / 2;
      const box = [x0, p.sy + dy - h * 0.85, x0 + w, p.sy + dy + h * 0.2];
      if (box[0] < 0 || box[2] > W || box[1] < 0 || box[3] > H) continue;
      if (placed.some((b) => b[4] !== p && box[0] < b[2] && box[2] > b[0] && box[1] < b[3] && box[3] > b[1])) continue;
      placed.push(box);
      p.label = { dx, dy, anchor };
      break;
    }
  }
}

function radius(p) {
  return p.role === "centre" ? 9 : p.role === "neighbour" ? 6 : 3.8;
}

function prio(p) {
  return p.role === "centre" ? 0 : p.role === "neighbour" ? p.rank : 1000 - p.similarity;
}

function renderMap(m) {
  const svg = $("map");
  svg.replaceChildren();
  const byKey = new Map();
  const project = fit(m.points);
  for (const p of m.points) {
    [p.sx, p.sy] = project(p);
    byKey.set(p.key, p);
  }
  placeLabels(m.points);
  const edges = el("svg:g", { class: "edges" });
  for (const e of [...m.edges].reverse()) {  // ring-2 edges first, the key's on top
    const a = byKey.get(e.source), b = byKey.get(e.target);
    if (!a || !b) continue;
    const line = el("svg:line", { x1: a.sx, y1: a.sy, x2: b.sx, y2: b.sy, "data-source": e.source, "data-target": e.target });
    line.setAttribute("class", e.source === m.key ? "edge first" : "edge");
    edges.append(line);
  }
  svg.append(edges);
  const dots = el("svg:g", { class: "points" });
  const order = [...m.points].sort((a, b) => prio(b) - prio(a));  // centre drawn last (on top)
  for (const p of order) {
    const g = el("svg:g", { class: `pt ${p.role}`, "data-key": p.key, transform: `translate(${p.sx.toFixed(1)},${p.sy.toFixed(1)})` });
    g.append(el("svg:circle", { r: radius(p) }));
    const lab = p.label || { dx: 8, dy: 5, anchor: "start" };
    const text = el("svg:text", { x: lab.dx, y: lab.dy, "text-anchor": lab.anchor }, p.key);
    if (!p.label) text.setAttribute("class", "hidden");
    g.append(text);
    g.addEventListener("mouseenter", (ev) => { showTip(p, m, ev); highlight(p.key, true); });
    g.addEventListener("mousemove", (ev) => moveTip(ev));
    g.addEventListener("mouseleave", () => { $("tooltip").hidden = true; highlight(p.key, false); });
    g.addEventListener("click", () => { if (!(m.text && p.role === "centre")) recentre(p.key); });  // a sentence is no key
    dots.append(g);
  }
  svg.append(dots);
}

function showTip(p, m, ev) {
  const tip = $("tooltip");
  tip.replaceChildren(el("b", {}, p.key), el("br"));
  const lines = [`cosine to ${m.key}: ${p.similarity.toFixed(4)}`];
  if (p.role === "neighbour") lines.unshift(`#${p.rank} neighbour · score ${p.score.toFixed(4)}`);
  if (p.role === "second") lines.unshift(`neighbour of ${p.via}`);
  if (p.role === "centre") lines.splice(0, 1, m.text ? "the sentence (its Embed vector)" : "the key");
  lines.forEach((line, i) => { if (i) tip.append(el("br")); tip.append(document.createTextNode(line)); });
  tip.hidden = false;
  moveTip(ev);
}

function moveTip(ev) {
  const tip = $("tooltip"), panel = $("map-panel").getBoundingClientRect();
  tip.style.left = `${ev.clientX - panel.left + 14}px`;
  tip.style.top = `${ev.clientY - panel.top + 12}px`;
}

function highlight(key, on) {
  for (const node of document.querySelectorAll(`[data-key="${CSS.escape(key)}"]`)) node.classList.toggle("hot", on);
  for (const line of $("map").querySelectorAll("line")) {
    if (line.dataset.source === key || line.dataset.target === key) line.classList.toggle("hot", on);
  }
}

// ---- actions --------------------------------------------------------------------------------

function params() {
  return { table: $("table").value, topn: $("topn").value, second: $("second").value, method: $("method").value };
}

function showMap(m) {
  state.map = m;
  $("centre-key").textContent = m.key;
  $("legend-centre").textContent = m.text ? "sentence" : "key";
  const neighbours = m.points.filter((p) => p.role === "neighbour").sort((a, b) => a.rank - b.rank);
  renderList($("neighbors"), neighbours.map((p) => ({ key: p.key, score: p.score })));
  renderMap(m);
  const variance = m.explained.length ? ` · ${(100 * (m.explained[0] + m.explained[1])).toFixed(0)}% of the variance shown` : "";
  $("status").textContent = `${m.table} v${m.version} · ${m.points.length} points · ${m.method.toUpperCase()}${variance}`;
}

// ---- timeline: the same key in every loaded version (a training run's snapshots) ------------

function showStep(i) {
  const step = state.steps[i];
  const facts = Object.entries(step.training || {}).map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toPrecision(4)}`);
  $("version-label").textContent = [`v${step.version}`, ...facts].join(" · ");
  if (step.error) { showError(new Error(step.error)); return; }
  showError(null);
  showMap(step.map);
}

async function show(key, mode = "key") {
  key = key.trim();
  if (!key) return;
  const ticket = ++state.request;  // answers to older requests are dropped
  $("key").value = key;
  setMode(mode);
  $("status").textContent = `Looking up ${key}…`;
  const versions = state.versions[$("table").value] || [];
  $("timeline").hidden = versions.length < 2 || mode === "text";
  try {
    if (mode === "text") {
      // A sentence: its Embed vector at the centre, among the tokens nearest it.
      state.steps = null;
      const m = await api("map", { text: key, ...params() });
      if (ticket !== state.request) return;
      showError(null);
      showMap(m);
      return;
    }
    if (versions.length >= 2) {
      // Several versions loaded: fetch them all once (maps aligned step to step) and slide through.
      const tl = await api("timeline", { key, table: $("table").value, topn: $("topn").value, second: $("second").value });
      if (ticket !== state.request) return;
      state.steps = tl.steps;
      const slider = $("version");
      slider.max = String(tl.steps.length - 1);
      slider.value = String(tl.steps.length - 1);
      showStep(tl.steps.length - 1);
      return;
    }
    state.steps = null;
    const m = await api("map", { key, ...params() });
    if (ticket !== state.request) return;
    showError(null);
    showMap(m);
  } catch (err) {
    if (ticket !== state.request || err instanceof AuthRequired) return;
    showError(err);
    $("status").textContent = "";
  }
}

function recentre(key, mode = "key") {
  const hash = new URLSearchParams({ table: $("table").value, [mode]: key }).toString();
  if (location.hash.slice(1) === hash) show(key, mode);
  else location.hash = hash;  // hashchange -> show(); keeps Back working
}

function setMode(mode) {
  $("mode").value = mode;
  $("key-label").textContent = mode === "text" ? "sentence" : "key";
  $("key").placeholder = mode === "text" ? "the cat sat on the mat" : "cat";
}

async function analogy(ev) {
  ev.preventDefault();
  const [a, b, c] = ["a", "b", "c"].map((id) => $(id).value.trim());
  try {
    const res = await api("analogy", { table: $("table").value, a, b, c, topn: 8 });
    showError(null);
    renderList($("analogy-results"), res.neighbors);
  } catch (err) {
    if (!(err instanceof AuthRequired)) showError(err);
    $("analogy-results").replaceChildren();
  }
}

function fromHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("table") && [...$("table").options].some((o) => o.value === h.get("table"))) $("table").value = h.get("table");
  if (h.get("text")) show(h.get("text"), "text");
  else if (h.get("key")) show(h.get("key"));
}

async function loadTables() {
  try {
    const info = await api("tables", {});
    $("token-form").hidden = true;
    $("table").replaceChildren();
    for (const t of info.tables) {
      state.versions[t.name] = t.versions || [t.version];
      const opt = el("option", { value: t.name }, `${t.name} (v${t.version}, ${t.count.toLocaleString()} × ${t.dim})`);
      if (t.name === info.default) opt.selected = true;
      $("table").append(opt);
    }
    $("method").replaceChildren();
    for (const m of info.methods) $("method").append(el("option", { value: m }, m.toUpperCase()));
    $("method-label").hidden = info.methods.length < 2;
    $("topn").max = info.limits.map_topn;
    $("second").max = info.limits.map_second;
    document.body.dataset.ready = "1";
    fromHash();
  } catch (err) {
    if (!(err instanceof AuthRequired)) showError(err);
  }
}

function signIn(ev) {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  showError(null);
  loadTables();
}

function init() {
  $("token-form").addEventListener("submit", signIn);
  $("search").addEventListener("submit", (ev) => { ev.preventDefault(); recentre($("key").value.trim(), $("mode").value); });
  $("mode").addEventListener("change", () => setMode($("mode").value));
  $("analogy").addEventListener("submit", analogy);
  $("table").addEventListener("change", () => { if ($("key").value.trim()) recentre($("key").value.trim(), $("mode").value); });
  $("version").addEventListener("input", () => { if (state.steps) showStep(Number($("version").value)); });
  window.addEventListener("hashchange", fromHash);
  let resizing = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => state.map && renderMap(state.map), 150);
  });
  loadTables();
}

init();
