// alexnet explore: the page. Plain JavaScript, no framework, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, ref: null, view: "classify", shown: {} };

// -- talking to the server ---------------------------------------------------------------------
let pending = 0;
let poller = null;

function showStatus(text) {
  $("status").textContent = text;
  $("status").classList.toggle("busy", text !== "");
}

async function pollStatus() {
  try {
    const s = await (await fetch("/api/status")).json();
    if (pending === 0) return;
    const waiting = s.waiting > 0 ? ` (${s.waiting} waiting)` : "";
    showStatus(s.running ? `${s.running}…${waiting}` : `queued${waiting}`);
  } catch (e) { /* the answer itself will report a failure */ }
}

async function api(path, options) {
  pending += 1;
  showStatus("working…");
  if (!poller) poller = setInterval(pollStatus, 400);
  try {
    const response = await fetch(path, options);
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : { error: await response.text() };
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    hideMessage();
    return body;
  } finally {
    pending -= 1;
    if (pending === 0) { clearInterval(poller); poller = null; showStatus(""); }
  }
}

function say(text) { $("message").textContent = text; $("message").hidden = false; }
function hideMessage() { $("message").hidden = true; }
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}
const pct = (p) => `${(100 * p).toFixed(1)} %`;

// -- choosing an image -------------------------------------------------------------------------
function setImage(ref, src, caption) {
  state.ref = ref;
  state.shown = {};
  $("current").hidden = false;
  $("current-img").src = src;
  $("current-caption").textContent = caption;
  show(["filters", "run", "units"].includes(state.view) ? "classify" : state.view);
}

async function upload(file) {
  if (!file) return;
  if (state.info && file.size > state.info.max_upload) {
    say(`${file.name}: ${file.size.toLocaleString()} bytes is over the upload limit of ${state.info.max_upload.toLocaleString()}`);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  try {
    const answer = await api("/api/upload", { method: "POST", body: form });
    setImage(`image=${answer.image}`, URL.createObjectURL(file), file.name);
  } catch (e) { say(e.message); }
}

function pickData(index) {
  const split = $("split").value;
  const size = state.info.splits[split];
  const i = Math.max(0, Math.min(size - 1, index));
  $("index").value = i;
  setImage(`split=${encodeURIComponent(split)}&index=${i}`, `/api/data/${encodeURIComponent(split)}/${i}`, `${split} image ${i}`);
}

// -- the views ---------------------------------------------------------------------------------
const loaders = { classify: loadClassify, layers: loadLayers, arithmetic: loadArithmetic, architecture: loadArchitecture, geometry: loadGeometry, filters: loadFilters, why: loadWhy, units: loadUnits, neighbours: loadNeighbours, run: loadRun };

function show(view) {
  state.view = view;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${view}`;
  const key = `${view}|${view === "classify" ? $("tenviews").checked : ""}`;
  const needsImage = !["architecture", "geometry", "filters", "run", "units"].includes(view);
  if (state.shown[key] || (needsImage && !state.ref)) return;
  state.shown[key] = true;
  loaders[view]().catch((e) => { state.shown[key] = false; say(e.message); });
}

async function loadClassify() {
  const views = $("tenviews").checked ? 10 : 1;
  const a = await api(`/api/classify?${state.ref}&views=${views}`);
  $("classify-hint").textContent = `The ${a.top.length} most probable classes (${views === 10 ? "softmax averaged over the ten views" : "the centre crop"})` +
    (a.truth ? `; the true class is ${a.truth.label}.` : ".");
  $("top5").replaceChildren(...a.top.map((t) => {
    const bar = el("li", { class: "bar" + (a.truth && a.truth.index === t.index ? " truth" : "") },
      el("span", { class: "label", text: t.label, title: t.label }), el("span", { class: "track" }, el("span", { class: "fill" })),
      el("span", { class: "pct", text: pct(t.probability) }));
    bar.querySelector(".fill").style.width = `${Math.max(0.5, 100 * t.probability)}%`;
    return bar;
  }));
  $("seen-row").hidden = false;
  $("seen").src = a.seen;
  $("seen-caption").textContent = `the image as the network takes it: ${a.size}×${a.size}`;
  $("crop").src = a.crop;
  $("crop-caption").textContent = `the centre ${a.crop_size}×${a.crop_size} crop it saw (before the mean is subtracted)`;
  $("ten").replaceChildren(...(a.view_images || []).map((v) => el("figure", {}, el("img", { src: v.png, alt: v.name }), el("figcaption", { text: v.name }))));
}

async function loadLayers() {
  const a = await api(`/api/layers?${state.ref}`);
  const towers = a.towers > 1 ? " (left: tower 1, right: tower 2, as on the paper's two GPUs)" : "";
  $("layers").replaceChildren(el("p", { class: "hint", text: `input ${a.input}${towers}` }), ...a.layers.map((layer) => {
    const row = el("div", { class: "layer" }, el("h3", {}, `${layer.name} `, el("span", { class: "shape", text: `${layer.kind} · ${layer.shape}` })));
    const parts = el("div", { class: "towers" });
    layer.towers.forEach((part, t) => {
      const img = el("img", { class: "grid", src: part.png, alt: `${layer.name} tower ${t + 1}` });
      const scale = Math.max(1, Math.min(4, Math.floor(360 / Math.max(1, part.columns * (part.width + 1)))));
      img.addEventListener("load", () => { img.style.width = `${img.naturalWidth * scale}px`; }, { once: true });
      const offset = layer.towers.slice(0, t).reduce((n, p) => n + p.count, 0);
      img.addEventListener("click", (event) => enlarge(event, img, part, `${layer.name}${layer.towers.length > 1 ? ` tower ${t + 1}` : ""}`, layer.name, offset));
      parts.append(el("figure", {}, img, el("figcaption", { text: `${part.count} ${part.height > 1 ? "maps" : "units"}` })));
    });
    row.append(parts);
    return row;
  }));
}

function enlarge(event, img, part, name, layer, offset) {
  const box = img.getBoundingClientRect();
  const x = (event.clientX - box.left) * img.naturalWidth / box.width;
  const y = (event.clientY - box.top) * img.naturalHeight / box.height;
  const gap = part.height > 1 || part.width > 1 ? 1 : 0;
  const col = Math.floor(x / (part.width + gap)), rowIndex = Math.floor(y / (part.height + gap));
  const i = rowIndex * part.columns + col;
  const canvas = $("zoom-canvas");
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  if (part.height === 1 && part.width === 1) {  // an FC layer: show the whole grid of units
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    ctx.drawImage(img, 0, 0);
    $("zoom-caption").textContent = `${name}: ${part.count} units` + (i < part.count ? `; unit ${i} = ${part.maxima[i]}` : "");
    state.zoom = { layer, unit: (cx, cy) => [offset + Math.floor(cy / (part.height + gap)) * part.columns + Math.floor(cx / (part.width + gap))] };
  } else {
    if (i >= part.count) return;
    canvas.width = part.width; canvas.height = part.height;
    ctx.drawImage(img, col * (part.width + gap), rowIndex * (part.height + gap), part.width, part.height, 0, 0, part.width, part.height);
    $("zoom-caption").textContent = `${name}, map ${i}: ${part.height}×${part.width}, largest value ${part.maxima[i]}. Click a unit for its arithmetic.`;
    state.zoom = { layer, unit: (cx, cy) => [offset + i, Math.floor(cy), Math.floor(cx)] };
  }
  $("zoom").showModal();
}

// -- arithmetic: the numbers that made one unit (CNN Explainer's view) ------------------------------
function grid(rows, mark) {
  return el("table", { class: "numbers" }, ...rows.map((r, y) => el("tr", {}, ...r.map((v, x) =>
    el("td", { text: fmt(v), class: mark && mark[0] === y && mark[1] === x ? "mark" : "" })))));
}
const fmt = (v) => (Number.isFinite(v) ? +v.toPrecision(4) : String(v)).toString();

function explainUnit(a) {
  const top = a.probabilities ? a.probabilities.indexOf(Math.max(...a.probabilities)) : -1;
  const head = a.kind === "softmax"
    ? el("p", {}, el("b", { text: "softmax" }), ` over ${a.probabilities.length} classes: the most probable is ${top} (${state.info.class_names[top]}), p = ${fmt(a.probabilities[top])}`)
    : el("p", {}, el("b", { text: `${a.layer} [${a.unit.join(", ")}]` }), ` = ${fmt(a.output)}`);
  const parts = [head];
  if (a.kind === "conv") {
    parts.push(el("p", { text: `Σ over input channels ${a.channels[0]}–${a.channels[1] - 1}${a.tower !== null ? ` (tower ${a.tower + 1}'s own maps only)` : ""} of window ⊙ kernel, + bias ${fmt(a.bias)} = ${fmt(a.sum)}; window origin (${a.origin.join(", ")}), stride ${a.stride[0]}, padding ${a.padding[0]}` }));
    a.window.slice(0, 6).forEach((w, c) => parts.push(el("div", { class: "row" },
      el("figure", {}, grid(w), el("figcaption", { text: `input channel ${a.channels[0] + c}` })),
      el("figure", {}, grid(a.kernel[c]), el("figcaption", { text: "kernel" })),
      el("p", { text: `Σ = ${fmt(a.per_channel[c])}` }))));
    if (a.window.length > 6) parts.push(el("p", { class: "hint", text: `… and ${a.window.length - 6} more channels: per-channel sums ${a.per_channel.slice(6).map(fmt).join(", ")}` }));
  } else if (a.kind === "linear") {
    parts.push(el("p", { text: `x · w over ${a.inputs.length} inputs + bias ${fmt(a.bias)} = ${fmt(a.sum)}; the largest terms:` }),
      el("table", { class: "numbers" }, ...a.largest_terms.map((t) => el("tr", {}, el("td", { text: `x[${t.input}] = ${fmt(t.x)}` }), el("td", { text: `w = ${fmt(t.w)}` }), el("td", { text: `${fmt(t.product)}` })))));
  } else if (a.kind === "relu") {
    parts.push(el("p", { text: `ReLU: max(0, ${fmt(a.input)}) = ${fmt(Math.max(0, a.input))}` }));
  } else if (a.kind === "lrn") {
    parts.push(el("p", { text: `LRN over maps ${a.channels[0]}–${a.channels[1] - 1} (n = ${a.n}, within the unit's tower): a = ${fmt(a.input)}, Σa² = ${fmt(a.sum_of_squares)} of [${a.values.map(fmt).join(", ")}]` }),
      el("p", { text: `b = a / (k + α'·Σa²)^β = ${fmt(a.input)} / (${a.k} + ${fmt(a.alpha_per_term)} × ${fmt(a.sum_of_squares)})^${a.beta} = ${fmt(a.input)} / ${fmt(a.denominator)} (α' = α/n = ${a.alpha}/${a.n}, ${a.convention})` }));
  } else if (a.kind === "maxpool") {
    parts.push(el("p", { text: `max over the ${a.size}×${a.size} window at (${a.origin.join(", ")}), stride ${a.stride}: ${a.note}` }), grid(a.window, a.argmax));
  } else if (a.kind === "softmax") {
    parts.push(el("p", { text: `softmax of ${a.of}'s logits: p = exp(z − ${fmt(a.max)}) / ${fmt(a.sum)}` }),
      el("table", { class: "numbers" }, ...a.logits.map((z, k) => el("tr", {}, el("td", { text: `${k}: ${state.info.class_names[k]}` }), el("td", { text: `z = ${fmt(z)}` }), el("td", { text: `exp = ${fmt(a.exp[k])}` }), el("td", { text: `p = ${fmt(a.probabilities[k])}` })))));
  } else {
    parts.push(el("p", { text: `${a.note ?? a.kind}: ${fmt(a.input)}${a.factor !== undefined ? ` × ${a.factor}` : ""}` }));
  }
  $("arithmetic").replaceChildren(...parts);
}

async function loadArithmetic() {
  if (!$("ar-layer").options.length) {
    const a = await api(`/api/layers?${state.ref}`);
    $("ar-layer").replaceChildren(...a.layers.map((l) => el("option", { value: l.name, text: `${l.name} (${l.shape})` })), el("option", { value: "softmax", text: "softmax (the output)" }));
  }
  if (state.arith) { $("ar-layer").value = state.arith.layer; $("ar-unit").value = state.arith.unit.join(","); state.arith = null; }
  const asked = ++arithmeticAsked;  // an earlier answer arriving late must not replace this one
  const a = await api(`/api/arithmetic?${state.ref}&layer=${encodeURIComponent($("ar-layer").value)}&unit=${encodeURIComponent($("ar-unit").value)}`);
  if (asked === arithmeticAsked) explainUnit(a);
}
let arithmeticAsked = 0;

// -- geometry: the convolution visualiser, with AlexNet's layers and the 224-or-227 puzzle ----------
function outputSize(n, k, s, p, d, rule) {
  const span = n + 2 * p - d * (k - 1) - 1;  // how far the kernel's first tap can move
  const exact = span / s + 1;
  return { exact, out: span < 0 ? 0 : rule === "ceil" ? 1 + Math.ceil(span / s) : Math.floor(span / s) + 1 };
}
window.outputSize = outputSize;

const GEOMETRY = {
  "conv1 at 224, as the paper says (11×11, stride 4, no padding)": [224, 11, 4, 0, 1, "floor", "(224 − 11)/4 + 1 = 54.25: the kernels do not tile 224. The paper's 55×55 needs 227 (Caffe's crop), padding (torchvision), or cuda-convnet's ceil rule."],
  "conv1 at 227 (Caffe's bvlc_alexnet)": [227, 11, 4, 0, 1, "floor", "(227 − 11)/4 + 1 = 55 exactly: the 227 that Caffe's prototxt crops to."],
  "conv1 at 224 with cuda-convnet's ceil rule (alexnet_cudaconvnet)": [224, 11, 4, 0, 1, "ceil", "1 + ⌈(224 − 11)/4⌉ = 55: cuda-convnet lets the last window hang over the edge (zeros beyond it), so 224 gives 55 too."],
  "conv1 at 224, padding 2 (torchvision's alexnet_owt: 64 kernels)": [224, 11, 4, 2, 1, "floor", "⌊(224 + 4 − 11)/4⌋ + 1 = 55."],
  "conv1 at 224, padding 1 (d2l's alexnet_d2l)": [224, 11, 4, 1, 1, "floor", "⌊(224 + 2 − 11)/4⌋ + 1 = 54: d2l's net sees 54×54 maps."],
  "pool1: 3×3, stride 2 on 55 (overlapping, §3.4)": [55, 3, 2, 0, 1, "floor", "Neighbouring windows share a row or column: 55 → 27."],
  "conv2: 5×5, padding 2 on 27": [27, 5, 1, 2, 1, "floor", "Padding (k − 1)/2 keeps the size: 27 → 27."],
  "conv3–5: 3×3, padding 1 on 13": [13, 3, 1, 1, 1, "floor", "13 → 13."],
  "a dilated 3×3 (dilation 2) on 13": [13, 3, 1, 2, 2, "floor", "Dilation spreads the taps: a 3×3 kernel covers 5×5."],
};

function geometryValues() {
  const v = ["n", "k", "s", "p", "d"].map((id) => parseInt($(`geo-${id}`).value, 10));
  return v.every(Number.isFinite) && v[0] >= 1 && v[1] >= 1 && v[2] >= 1 && v[3] >= 0 && v[4] >= 1 ? v : null;
}

function drawGeometry(cell) {
  const v = geometryValues();
  if (!v) { $("geo-formula").textContent = "Give whole numbers: input, kernel, stride, dilation ≥ 1, padding ≥ 0."; return; }
  const [n, k, s, p, d] = v, rule = $("geo-rule").value, { exact, out } = outputSize(n, k, s, p, d, rule);
  $("geo-formula").textContent = `output = ${rule === "ceil" ? "1 + ⌈" : "⌊"}(${n} + 2·${p} − ${d}·(${k} − 1) − 1) / ${s}${rule === "ceil" ? "⌉" : "⌋ + 1"} = ${out}` +
    (Number.isInteger(exact) ? "" : `   (unrounded: ${+exact.toFixed(4)})`);
  const full = n + 2 * p, inCanvas = $("geo-in"), outCanvas = $("geo-out");
  const ci = inCanvas.width / full, co = outCanvas.width / Math.max(out, 1);
  const g = inCanvas.getContext("2d");
  g.fillStyle = "#ccc"; g.fillRect(0, 0, inCanvas.width, inCanvas.height);
  g.fillStyle = "#f6e3d4"; g.fillRect(p * ci, p * ci, n * ci, n * ci);
  if (cell) {
    g.fillStyle = "#c0392b";
    for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) g.fillRect((cell[1] * s + b * d) * ci, (cell[0] * s + a * d) * ci, Math.max(ci, 1), Math.max(ci, 1));
    const r0 = cell[0] * s - p, c0 = cell[1] * s - p, last = (k - 1) * d;
    $("geo-cell").textContent = `output (${cell[0]}, ${cell[1]}) reads input rows ${r0}–${r0 + last}, columns ${c0}–${c0 + last}` +
      (r0 < 0 || c0 < 0 || r0 + last >= n || c0 + last >= n ? " (partly padding)" : "") + `: ${k * k} cells`;
  }
  const o = outCanvas.getContext("2d");
  o.fillStyle = "#dbe9f6"; o.fillRect(0, 0, outCanvas.width, outCanvas.height);
  if (cell) { o.fillStyle = "#c0392b"; o.fillRect(cell[1] * co, cell[0] * co, Math.max(co, 1), Math.max(co, 1)); }
}

function loadGeometry() {
  if (!$("geo-preset").options.length) {
    $("geo-preset").replaceChildren(...Object.keys(GEOMETRY).map((name) => el("option", { value: name, text: name })));
    applyPreset();
  }
  drawGeometry(null);
  return Promise.resolve();
}

function applyPreset() {
  const [n, k, s, p, d, rule, note] = GEOMETRY[$("geo-preset").value];
  Object.entries({ n, k, s, p, d }).forEach(([id, v]) => { $(`geo-${id}`).value = v; });
  $("geo-rule").value = rule;
  $("geo-note").textContent = note;
  drawGeometry(null);
}

async function loadArchitecture() {
  $("architecture").src = "/api/architecture";
}

async function loadFilters() {
  const a = await api("/api/filters");
  $("filters-caption").textContent = `conv1's ${a.kernels} kernels of ${a.shape} (Fig. 3), each scaled to its own range.`;
  $("filters").replaceChildren(...a.towers.map((t) => el("figure", {}, el("img", { src: t.png, alt: t.name }), el("figcaption", { text: `${t.name}: ${t.count} kernels` }))));
}

async function loadWhy() {
  const target = $("why-class").value;
  const a = await api(`/api/why?${state.ref}&detail=${$("why-detail").value}${target === "" ? "" : `&class=${target}`}`);
  $("why-row").hidden = false;
  $("why-crop").src = a.crop;
  $("gradcam").src = a.gradcam;
  $("gradcam-caption").textContent = `Grad-CAM of “${a.label}” (p = ${pct(a.probability)}) on ${a.layer}`;
  $("occlusion").src = a.occlusion;
  $("occlusion-caption").textContent = `occlusion: a grey ${a.patch}×${a.patch} square at ${a.positions} positions; ` +
    `red = where it lowers p(${a.label}) most (to ${pct(a.occlusion_lowest)})`;
}

// -- what a unit sees: its top nine patches and an image optimised for it (units.py) -------------------
function unitControls() {
  const layer = state.unitLayers[$("unit-layer").value];
  $("unit-channel-box").hidden = !layer;
  $("unit-class-box").hidden = !!layer;
  if (layer) $("unit-channel").max = layer.channels - 1;
}

async function loadUnits() {
  if (!$("unit-layer").options.length) {
    const a = await api("/api/unit/layers");
    state.unitLayers = Object.fromEntries(a.layers.map((l) => [l.name, l]));
    $("unit-layer").replaceChildren(...a.layers.map((l) => el("option", { value: l.name, text: `${l.name} (${l.shape}; sees ${l.field}×${l.field} px)` })),
      el("option", { value: "", text: "a class (the output)" }));
    $("unit-class").replaceChildren(...state.info.class_names.map((n, k) => el("option", { value: String(k), text: `${k}: ${n}` })));
    unitControls();
  }
  const layer = $("unit-layer").value;
  const query = layer ? `layer=${encodeURIComponent(layer)}&channel=${encodeURIComponent($("unit-channel").value)}` : `class=${$("unit-class").value}`;
  $("unit-vis-box").hidden = true;
  if (Object.keys(state.info.splits).length) await showTop(await api(`/api/unit/top?${query}&split=${encodeURIComponent($("split").value)}`));
  else $("unit-caption").textContent = "No data set (start with --data) for the top patches; the optimised image only.";
  const v = await api(`/api/unit/visualise?${query}`);
  $("unit-vis-box").hidden = false;
  $("unit-vis").src = v.png;
  $("unit-vis-caption").textContent = `${v.unit} optimised from noise: ${v.objective} ${fmt(v.start)} → ${fmt(v.end)}` +
    (v.factor ? ` (× ${v.factor.toFixed(1)})` : "") + `, ${v.steps} steps in ${v.seconds} s` + (v.steps < v.asked ? ` (stopped at the time limit; ${v.asked} asked)` : "");
}

function showTop(top) {
  $("unit-caption").textContent = `${top.unit}: the ${top.patches.length} ${top.split} images (of the first ${top.images} of ${top.of}) that excite it most` +
    (top.field ? `, each cut to its ${top.field}×${top.field} px receptive field (clipped at the border)` : " (a class sees the whole crop)") + ". Click one to use it.";
  $("unit-top").replaceChildren(...top.patches.map((p) => {
    const img = el("img", { src: p.png, alt: `${top.split} ${p.index}`, title: p.at ? `strongest at row ${p.at[0]}, column ${p.at[1]}; pixels ${p.box.join(", ")}` : "the whole crop" });
    img.addEventListener("click", () => { $("split").value = top.split; pickData(p.index); });
    return el("figure", {}, img, el("figcaption", { text: `${top.split} ${p.index} · ${p.label} · ${fmt(p.value)}` }));
  }));
}

async function loadNeighbours() {
  const a = await api(`/api/neighbours?${state.ref}&k=8`);
  $("bank").textContent = `The ${a.split} images nearest in fc7 (Euclidean, Fig. 4 right); bank: ${a.bank}.`;
  $("neighbours").replaceChildren(...a.neighbours.map((n) => thumb(a.split, n.index, `${n.label} · ${n.distance.toFixed(2)}`)));
}

function thumb(split, index, caption) {
  const img = el("img", { src: `/api/data/${encodeURIComponent(split)}/${index}`, alt: `${split} ${index}`, title: "click to use this image" });
  img.addEventListener("click", () => { $("split").value = split; pickData(index); });
  return el("figure", {}, img, el("figcaption", { text: caption }));
}

// A run still training is followed live (ConvNetJS's page): live.json every 2 s; when an epoch ends the
// curves are redrawn and the other views reload with the run's new weights.
let livePoll = null, liveEpochs = -1;

function liveText(a) {
  const text = liveProgress(a);
  return a.weights_error ? `${text} · not following the checkpoint: ${a.weights_error}` : text;
}

function liveProgress(a) {
  const l = a.live;
  if (a.finished) return `finished: ${a.epochs_done} epoch(s)`;
  if (!l) return "waiting for the run's first steps";
  const loss = l.loss !== undefined ? ` · loss ${l.loss.toFixed(3)}` : "";
  return `${a.stale ? "no news for a while (stopped?) · " : ""}training epoch ${l.epoch} of ${l.epochs}: batch ${l.batch} of ` +
    `${l.per_epoch} (${Math.round((100 * l.batch) / Math.max(l.per_epoch, 1))} %)${loss} · ${Math.round(l.images_per_second)} img/s · ` +
    `${a.epochs_done} epoch(s) done`;
}

async function followRun() {
  const a = await api("/api/run/live");
  $("run-live").hidden = false;
  $("run-live").textContent = liveText(a);
  $("run-live").dataset.epochs = a.epochs_done;
  if (a.epochs_done !== liveEpochs || a.reloaded) {
    liveEpochs = a.epochs_done;
    for (const key of Object.keys(state.shown)) if (!key.startsWith("run")) delete state.shown[key];
    showRun(await api("/api/run"));
    if (state.view !== "run") show(state.view);  // the view in front (kernels, predictions…) redrawn with the new weights
  }
  if (a.finished && livePoll) { clearInterval(livePoll); livePoll = null; }
}

async function loadRun() {
  const a = await api("/api/run");
  showRun(a);
  if (a.run && !a.report && !livePoll) {
    await followRun();
    livePoll = setInterval(() => followRun().catch((e) => say(e.message)), 2000);
  }
  if (Object.keys(state.info.splits).length) await loadConfusion();
}

function showRun(a) {
  $("run-hint").textContent = a.run ? `run folder ${a.run}: ${a.epochs} epoch(s)` : "No run folder: start with --run RUN_DIR to see its curves and configuration.";
  $("curves").hidden = !a.curves;
  if (a.curves) $("curves").src = a.curves;
  $("config-box").hidden = !a.config;
  if (a.config) $("config").textContent = JSON.stringify(a.config, null, 2);
  const numbers = Object.entries(a.report || {}).filter(([, v]) => typeof v === "number");
  $("report").replaceChildren(...(numbers.length ? [el("table", {}, ...numbers.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: String(+v.toFixed(4)) }))))] : []));
}

async function loadConfusion() {
  const c = await api("/api/confusion");
  const names = state.info.class_names;
  $("confusion-title").hidden = false;
  $("confusion-caption").textContent = `${c.split}: ${c.images} of ${c.of} images, centre crop; top-1 error ${pct(c.top1_error)}, ` +
    `top-5 ${pct(c.top5_error)}. Rows: true class, columns: predicted. Click a cell to see its images.`;
  if (names.length > 40) { $("confusion").replaceChildren(el("p", { text: `${names.length} classes: too many for a table here.` })); return; }
  const head = el("tr", {}, el("th", { text: "" }), ...names.map((n) => el("th", { text: n })));
  const rows = c.matrix.map((row, t) => el("tr", {}, el("th", { text: names[t] }), ...row.map((count, p) => {
    const total = row.reduce((s, v) => s + v, 0) || 1;
    const cell = el("td", { class: t === p ? "diag" : "", text: String(count), title: `true ${names[t]}, predicted ${names[p]}` });
    cell.style.background = `rgba(43, 108, 176, ${(count / total).toFixed(3)})`;
    if (count / total > 0.55) cell.style.color = "#fff";
    cell.addEventListener("click", () => openCell(cell, t, p));
    return cell;
  })));
  $("confusion").replaceChildren(el("table", {}, head, ...rows));
}

async function openCell(cell, t, p) {
  for (const c of document.querySelectorAll("#confusion td.picked")) c.classList.remove("picked");
  cell.classList.add("picked");
  const a = await api(`/api/confusion/cell?true=${t}&predicted=${p}`);
  const shown = a.indices.map((i) => thumb(a.split, i, `${a.split} ${i}`));
  $("cell").replaceChildren(el("p", { class: "hint", text: `true ${a.true}, predicted ${a.predicted}: ${a.count} image(s)` }), ...shown);
}

// -- wiring ------------------------------------------------------------------------------------
async function start() {
  try {
    state.info = await api("/api/info");
  } catch (e) { say(e.message); return; }
  const i = state.info;
  $("model").textContent = `${i.checkpoint} · ${i.model} · ${i.classes} classes · ${i.input}` + (i.towers > 1 ? " · two towers" : "");
  const splits = Object.keys(i.splits);
  $("picker").hidden = splits.length === 0;
  $("split").replaceChildren(...splits.map((s) => el("option", { value: s, text: `${s} (${i.splits[s]})` })));
  if (splits.includes("test")) $("split").value = "test";
  $("why-class").append(...i.class_names.map((n, k) => el("option", { value: String(k), text: `${k}: ${n}` })));
}

$("file").addEventListener("change", (e) => upload(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files[0]); });
$("pick").addEventListener("click", () => pickData(parseInt($("index").value, 10) || 0));
$("random").addEventListener("click", () => pickData(Math.floor(Math.random() * state.info.splits[$("split").value])));
$("tenviews").addEventListener("change", () => show("classify"));
$("why-go").addEventListener("click", () => { delete state.shown["why|"]; show("why"); });
$("why-class").addEventListener("change", () => { delete state.shown["why|"]; show("why"); });
$("why-detail").addEventListener("change", () => { delete state.shown["why|"]; show("why"); });
$("zoom-close").addEventListener("click", () => $("zoom").close());
$("zoom-canvas").addEventListener("click", (event) => {
  if (!state.zoom) return;
  const c = $("zoom-canvas"), box = c.getBoundingClientRect();
  state.arith = { layer: state.zoom.layer, unit: state.zoom.unit((event.clientX - box.left) * c.width / box.width, (event.clientY - box.top) * c.height / box.height) };
  $("zoom").close();
  delete state.shown["arithmetic|"];
  show("arithmetic");
});
$("geo-preset").addEventListener("change", applyPreset);
for (const id of ["n", "k", "s", "p", "d", "rule"]) $(`geo-${id}`).addEventListener("input", () => { $("geo-note").textContent = ""; drawGeometry(null); });
$("geo-out").addEventListener("mousemove", (event) => {
  const v = geometryValues();
  if (!v) return;
  const out = outputSize(...v, $("geo-rule").value).out, c = $("geo-out"), box = c.getBoundingClientRect();
  const cell = [Math.floor((event.clientY - box.top) / box.height * out), Math.floor((event.clientX - box.left) / box.width * out)];
  if (cell.every((x) => x >= 0 && x < out)) drawGeometry(cell);
});
$("unit-layer").addEventListener("change", unitControls);
$("unit-go").addEventListener("click", () => { delete state.shown["units|"]; show("units"); });
$("ar-go").addEventListener("click", () => { delete state.shown["arithmetic|"]; show("arithmetic"); });
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view));
start();
