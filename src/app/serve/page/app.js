// The p2p-wgpu page: a prompt, its words as chips (click: swap, reweight, blend), runs with live progress and
// previews (server-sent events), results as <img> with per-token attention overlays, history, copy as command.
// Plain JavaScript, no framework, no network beyond this server.
"use strict";
const $ = (id) => document.getElementById(id);
const state = {
  words: [],          // the prompt's words (the tokenizer's split)
  positions: [],      // word index of each token position (null for BOS/EOS/pad)
  edits: {},          // word index -> {swap, weight, blend}
  selected: null,     // selected word index
  run: null,          // the run in progress: {id, source}
  shown: null,        // the run whose results are shown: {id, prompts, request, attention}
  upload: null,       // the uploaded picture being edited: {id, name}
  info: {},
};

function shellQuote(s) {
  return /^[A-Za-z0-9_.,=:\/+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
}

function showError(msg) { $("error").textContent = msg || ""; }
function setStatus(msg) { $("status").textContent = msg || ""; }

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (!r.ok) throw new Error((data && data.error) || ("HTTP " + r.status));
  return data;
}

// ---- chips ---------------------------------------------------------------------------------------------------
let tokenTimer = null;
function promptChanged() {
  clearTimeout(tokenTimer);
  tokenTimer = setTimeout(loadTokens, 150);
}

async function loadTokens() {
  const text = $("prompt").value.trim();
  if (!text) { state.words = []; state.positions = []; renderChips(); return; }
  try {
    const t = await api("GET", "/api/tokens?text=" + encodeURIComponent(text));
    const same = JSON.stringify(t.prompt_words) === JSON.stringify(state.words);
    state.words = t.prompt_words;
    state.positions = t.words;
    if (!same) { state.edits = {}; state.selected = null; }
    renderChips();
    showError("");
  } catch (e) { showError(e.message); }
}

function editOf(i) { return state.edits[i] || (state.edits[i] = { swap: "", weight: 1, blend: false }); }

function renderChips() {
  const box = $("chips");
  box.textContent = "";
  state.words.forEach((w, i) => {
    const c = document.createElement("span");
    c.className = "chip";
    c.dataset.word = w;
    c.dataset.index = i;
    const e = state.edits[i];
    const tags = [];
    if (e && e.swap) tags.push("→ " + e.swap);
    if (e && e.weight !== 1) tags.push("×" + e.weight);
    if (e && e.blend) tags.push("blend");
    if (tags.length) c.classList.add("edited");
    if (state.selected === i) c.classList.add("selected");
    c.textContent = w;
    if (tags.length) {
      const t = document.createElement("span");
      t.className = "tag";
      t.textContent = tags.join(" ");
      c.appendChild(t);
    }
    c.addEventListener("click", () => selectChip(i));
    c.addEventListener("mouseenter", () => drawOverlays(i));
    c.addEventListener("mouseleave", () => drawOverlays(state.selected));
    box.appendChild(c);
  });
  $("chip-editor").hidden = state.selected === null;
  renderEdits();
}

function selectChip(i) {
  state.selected = state.selected === i ? null : i;
  if (state.selected !== null) {
    const e = editOf(i);
    $("chip-word").textContent = state.words[i];
    $("swap-to").value = e.swap;
    $("reweight").value = e.weight;
    $("reweight-v").textContent = Number(e.weight).toFixed(1);
    $("blend").checked = e.blend;
  }
  renderChips();
  drawOverlays(state.selected);
}

function chipEdited() {
  if (state.selected === null) return;
  const e = editOf(state.selected);
  e.swap = $("swap-to").value.trim();
  e.weight = Number($("reweight").value);
  e.blend = $("blend").checked;
  $("reweight-v").textContent = e.weight.toFixed(1);
  renderChips();
}

// ---- requests ------------------------------------------------------------------------------------------------
function baseRequest() {
  const r = { prompt: $("prompt").value.trim() };
  const seed = $("seed").value.trim();
  if (state.upload) {
    // A picture is edited from its inversion: no seed; the prompt describes the picture.
    r.upload = state.upload.id;
    r.inversion = $("inversion").value;
  } else if (seed !== "") r.seed = Number(seed);
  const steps = $("steps").value.trim();
  if (steps !== "") r.steps = Number(steps);
  return r;
}

function editRequest() {
  const r = baseRequest();
  const swap = [], reweight = [], blend = [];
  Object.entries(state.edits).forEach(([i, e]) => {
    const w = state.words[i];
    if (!w) return;
    if (e.swap) swap.push(w + "=" + e.swap);
    if (e.weight !== 1) reweight.push(w + "=" + e.weight);
    if (e.blend) { blend.push(w); if (e.swap) blend.push(...e.swap.split(/\s+/)); }
  });
  if (swap.length) r.swap = swap;
  if (reweight.length) r.reweight = reweight;
  if (blend.length) r.blend = blend.join(",");
  const target = $("target").value.trim();
  if (target) r.target = [target];
  r.cross_steps = String($("cross").value);
  r.self_steps = String($("self").value);
  return r;
}

function commandOf(r) {
  const a = ["p2p-wgpu"];
  if (state.info.model) a.push("--model", shellQuote(state.info.model));
  if (r.upload) a.push("--image", shellQuote(state.upload && state.upload.id === r.upload ? state.upload.name : "PICTURE"));
  a.push("--prompt", shellQuote(r.prompt));
  if (r.inversion && r.inversion !== "direct") a.push("--inversion", r.inversion);
  if (r.seed !== undefined && r.seed !== null) a.push("--seed", String(r.seed));
  if (r.steps) a.push("--steps", String(r.steps));
  (r.swap || []).forEach((s) => a.push("--swap", shellQuote(s)));
  (r.reweight || []).forEach((s) => a.push("--reweight", shellQuote(s)));
  if (r.blend) a.push("--blend", shellQuote(r.blend));
  (r.target || []).forEach((s) => a.push("--target", shellQuote(s)));
  const edit = (r.swap && r.swap.length) || (r.reweight && r.reweight.length) || (r.target && r.target.length);
  if (edit && r.cross_steps && r.cross_steps !== "0.8") a.push("--cross-steps", r.cross_steps);
  if (edit && r.self_steps && r.self_steps !== "0.4") a.push("--self-steps", r.self_steps);
  return a.join(" ");
}

function renderEdits() {
  const r = editRequest();
  $("command").textContent = commandOf(r);
  const parts = [];
  if (r.swap) parts.push("swap " + r.swap.join(", "));
  if (r.reweight) parts.push("reweight " + r.reweight.join(", "));
  if (r.blend) parts.push("blend " + r.blend);
  if (r.target) parts.push("target “" + r.target[0] + "”");
  $("edits").textContent = parts.length ? "edit: " + parts.join("; ") : "";
}

// ---- runs ----------------------------------------------------------------------------------------------------
async function start(request) {
  if (!request.prompt) { showError("type a prompt first"); return; }
  showError("");
  if (state.run) await cancel();
  let run;
  try { run = await api("POST", "/api/runs", request); } catch (e) { showError(e.message); return; }
  if (request.seed === undefined && run.request && run.request.seed !== undefined) $("seed").value = run.request.seed;
  state.run = { id: run.id, t0: performance.now(), first: null };
  $("cancel").disabled = false;
  $("bar").style.width = "0";
  setStatus("queued");
  const es = new EventSource("/api/runs/" + run.id + "/events");
  state.run.es = es;
  es.addEventListener("step", (m) => {
    const s = JSON.parse(m.data);
    if (!state.run || state.run.id !== run.id) return;
    if (state.run.first === null) state.run.first = performance.now() - state.run.t0;
    $("bar").style.width = (100 * s.done / s.of).toFixed(1) + "%";
    setStatus(`${s.stage} step ${s.step}/${s.total}`);
    if (s.preview) { $("preview").src = s.preview; $("preview-box").hidden = false; }
  });
  es.addEventListener("result", (m) => {
    es.close();
    const r = JSON.parse(m.data);
    const mine = state.run && state.run.id === run.id;
    const timing = mine ? ` (first preview ${(state.run.first / 1000 || 0).toFixed(1)} s, image ${((performance.now() - state.run.t0) / 1000).toFixed(1)} s)` : "";
    if (mine) { state.run = null; $("cancel").disabled = true; }
    $("preview-box").hidden = true;
    if (r.status === "done") {
      $("bar").style.width = "100%";
      setStatus("done" + timing);
      showResult(run.id, r.prompts, r.files, run.request);
    } else {
      setStatus(r.status);
      if (r.status === "failed") showError(r.error);
    }
    loadHistory();
  });
  es.onerror = () => { if (state.run && state.run.id === run.id) setStatus("connection lost; the run goes on"); };
}

async function cancel() {
  const r = state.run;
  if (!r) return;
  try { await api("DELETE", "/api/runs/" + r.id); } catch (e) { showError(e.message); }
}

async function showResult(id, prompts, files, request) {
  const box = $("images");
  box.textContent = "";
  const names = files.map((f) => f.split("/").pop());
  const rows = names.filter((n) => n === "input.png" || n === "source.png" || /^edit(-\d+)?\.png$/.test(n));
  let row = 0;
  rows.forEach((n) => {
    const fig = document.createElement("figure");
    const stack = document.createElement("div");
    stack.className = "stack";
    const img = document.createElement("img");
    img.src = "/api/runs/" + id + "/files/" + n;
    img.alt = n;
    img.className = "result";
    stack.appendChild(img);
    const cap = document.createElement("figcaption");
    if (n === "input.png") cap.textContent = "input";
    else {
      const canvas = document.createElement("canvas");
      canvas.dataset.row = row;
      stack.appendChild(canvas);
      cap.textContent = prompts[row] || n;
      row += 1;
    }
    fig.appendChild(stack);
    fig.appendChild(cap);
    box.appendChild(fig);
  });
  state.shown = { id, prompts, request, attention: null };
  try { state.shown.attention = await api("GET", "/api/runs/" + id + "/attention"); } catch (e) { /* none */ }
  drawOverlays(state.selected);
}

// Token positions of word `w` (an index into the prompt's words) in row `b` of the shown run.
function positionsOf(w, b, rowLabels) {
  const out = [];
  const sameWords = state.shown && state.shown.prompts[b] &&
    state.shown.prompts[b].split(" ").length === state.words.length;
  if (b === 0 || sameWords) {
    state.positions.forEach((p, i) => { if (p === w && i < rowLabels.length) out.push(i); });
    if (out.length) return out;
  }
  const e = state.edits[w];
  const want = [state.words[w]].concat(e && e.swap ? e.swap.split(/\s+/) : []);
  rowLabels.forEach((l, i) => { if (want.includes(l.replace(/<\/w>$/, ""))) out.push(i); });
  return out;
}

function drawOverlays(w) {
  document.querySelectorAll("#images canvas").forEach((c) => {
    const ctx = c.getContext("2d");
    const a = state.shown && state.shown.attention;
    if (w === null || w === undefined || !a) { c.width = 1; c.height = 1; ctx.clearRect(0, 0, 1, 1); c.dataset.token = ""; return; }
    const b = Number(c.dataset.row);
    const row = a.rows[b];
    if (!row) return;
    const pos = positionsOf(w, b, row.labels);
    const res = a.res;
    c.width = res; c.height = res;
    const sum = new Float32Array(res * res);
    pos.forEach((p) => row.maps[p].forEach((v, q) => { sum[q] += v; }));
    let max = 1e-6;
    sum.forEach((v) => { max = Math.max(max, v); });
    const img = ctx.createImageData(res, res);
    for (let q = 0; q < res * res; q++) {
      const v = sum[q] / max;
      img.data[4 * q] = 255;
      img.data[4 * q + 1] = Math.round(200 * (1 - v));
      img.data[4 * q + 2] = 0;
      img.data[4 * q + 3] = Math.round(230 * v);
    }
    ctx.putImageData(img, 0, 0);
    c.dataset.token = state.words[w] || "";
  });
}

// ---- history -------------------------------------------------------------------------------------------------
async function loadHistory() {
  let list;
  try { list = await api("GET", "/api/runs"); } catch (e) { return; }
  const box = $("history");
  box.textContent = "";
  list.runs.filter((r) => r.status === "done").forEach((r) => {
    const d = document.createElement("div");
    d.className = "hist";
    const edit = r.files.find((f) => /edit(-1)?\.png$/.test(f)) || r.files.find((f) => /source\.png$/.test(f));
    if (edit) { const img = document.createElement("img"); img.src = edit; d.appendChild(img); }
    const t = document.createElement("div");
    t.textContent = commandOf(r.request).replace(/^p2p-wgpu (--model \S+ )?/, "");
    d.appendChild(t);
    d.title = "show this run and put its request back in the controls";
    d.addEventListener("click", () => restore(r));
    box.appendChild(d);
  });
}

async function restore(r) {
  const q = r.request;
  if (r.upload) {
    state.upload = { id: r.upload, name: "PICTURE" };
    $("picture-thumb").src = "/api/images/" + r.upload;
    $("picture-thumb").hidden = false;
    $("picture-clear").hidden = false;
    if (q.inversion) $("inversion").value = q.inversion;
  } else pictureCleared();
  $("prompt").value = q.prompt;
  $("seed").value = q.seed ?? "";
  $("steps").value = q.steps ?? "";
  $("target").value = (q.target || [])[0] || "";
  $("cross").value = Number(q.cross_steps) || 0.8;
  $("self").value = Number(q.self_steps) || 0.4;
  await loadTokens();
  state.edits = {};
  (q.swap || []).forEach((s) => { const [a, b] = s.split("="); const i = state.words.indexOf(a); if (i >= 0) editOf(i).swap = b; });
  (q.reweight || []).forEach((s) => { const [a, b] = s.split("="); const i = state.words.indexOf(a); if (i >= 0) editOf(i).weight = Number(b); });
  (q.blend || "").split(",").forEach((a) => { const i = state.words.indexOf(a); if (i >= 0) editOf(i).blend = true; });
  renderChips();
  showResult(r.id, r.prompts, r.files, q);
}

// ---- pictures -----------------------------------------------------------------------------------------------
async function pictureChosen() {
  const f = $("picture").files[0];
  if (!f) return;
  showError("");
  try {
    const r = await fetch("/api/images", { method: "POST", body: f });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    state.upload = { id: data.id, name: f.name };
    $("picture-thumb").src = "/api/images/" + data.id;
    $("picture-thumb").hidden = false;
    $("picture-clear").hidden = false;
    $("picture-note").textContent = `${data.width}×${data.height}: describe it in the prompt; Generate reconstructs it`;
  } catch (e) { showError(e.message); }
  $("picture").value = "";
  renderEdits();
}

function pictureCleared() {
  state.upload = null;
  $("picture-thumb").hidden = true;
  $("picture-clear").hidden = true;
  $("picture-note").textContent = "";
  renderEdits();
}

// ---- wiring --------------------------------------------------------------------------------------------------
function wire() {
  $("prompt").addEventListener("input", promptChanged);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); if (e.shiftKey) start(editRequest()); else start(baseRequest()); }
  });
  $("generate").addEventListener("click", () => start(baseRequest()));
  $("edit").addEventListener("click", () => start(editRequest()));
  $("cancel").addEventListener("click", cancel);
  $("picture").addEventListener("change", pictureChosen);
  $("picture-clear").addEventListener("click", pictureCleared);
  $("inversion").addEventListener("input", renderEdits);
  ["swap-to", "reweight", "blend"].forEach((id) => $(id).addEventListener("input", chipEdited));
  $("swap-to").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); start(editRequest()); } });
  ["target", "cross", "self", "seed", "steps"].forEach((id) => $(id).addEventListener("input", () => {
    $("cross-v").textContent = $("cross").value;
    $("self-v").textContent = $("self").value;
    renderEdits();
  }));
  $("copy").addEventListener("click", async () => {
    const text = $("command").textContent;
    try { await navigator.clipboard.writeText(text); setStatus("command copied"); } catch (e) { setStatus("select the command to copy it"); }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") cancel(); });
}

async function init() {
  wire();
  try {
    state.info = await api("GET", "/api/info");
    $("model").textContent = `${state.info.model_name || state.info.model} on ${state.info.adapter}`;
    if (state.info.steps) $("steps").placeholder = state.info.steps;
  } catch (e) { showError(e.message); }
  if (!$("prompt").value) $("prompt").value = "a red circle on a white background";
  await loadTokens();
  loadHistory();
}
init();
