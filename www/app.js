// The page: picks a model, samples, completes occluded images and shows the model's
// per-pixel surprise, all through the wasm build of the pixelrnn library (pkg/).
//
// Images travel as [H, W, C] bytes, as the library takes them; canvases are drawn
// at the model's size and scaled up by CSS.

const $ = (id) => document.getElementById(id);

/// Shows `message` above the page and logs `cause`.
function fail(message, cause) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  document.body.dataset.error = message;
  if (cause) console.error(cause);
}

window.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  fail(`Something went wrong: ${e.reason?.message ?? e.reason}`, e.reason);
});

/// Explains plainly that WebGPU is missing and what to do about it.
function explainNoWebGpu(why) {
  const box = $("no-webgpu");
  box.innerHTML = `
    <strong>This page needs WebGPU, and ${why}.</strong>
    <p>The models run on your graphics card through WebGPU. Open the page in a
    browser that has it: Chrome or Edge 113 or later on Windows, macOS or ChromeOS,
    Safari 26 or later, or Firefox 141 or later on Windows. On Linux, Chrome needs
    <code>chrome://flags/#enable-unsafe-webgpu</code> switched on. If it is already
    on, your graphics driver may be blocked: try updating it.</p>`;
  box.hidden = false;
  document.body.dataset.webgpu = "missing";
}

/// Resolves to whether WebGPU gives this page an adapter, explaining if not.
async function haveWebGpu() {
  if (!("gpu" in navigator)) {
    explainNoWebGpu("this browser does not offer it");
    return false;
  }
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) {
    explainNoWebGpu("this browser offers it but found no usable graphics adapter");
    return false;
  }
  return true;
}

/// Draws `image` ([H, W, C] bytes) into `canvas`; `mask` (one byte per pixel, 1 where
/// hidden) paints hidden pixels mid-grey.
function draw(canvas, image, size, channels, mask = null) {
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(size, size);
  for (let p = 0; p < size * size; p++) {
    for (let k = 0; k < 3; k++) {
      const v = image[p * channels + (channels === 1 ? 0 : k)];
      out.data[p * 4 + k] = mask && mask[p] ? 128 : v;
    }
    out.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

/// A new canvas in `parent`.
function canvasIn(parent, className = "") {
  const c = document.createElement("canvas");
  c.className = className;
  parent.appendChild(c);
  return c;
}

/// Colour of a surprise of `bits` on a black-red-yellow-white scale reaching white
/// at 8 bits (a uniform guess).
function heat(bits) {
  const t = Math.min(Math.max(bits / 8, 0), 1) * 3;
  return [Math.min(t, 1), Math.min(Math.max(t - 1, 0), 1), Math.min(Math.max(t - 2, 0), 1)].map(
    (v) => Math.round(v * 255),
  );
}

const state = {
  wasm: null,
  models: [],
  model: null,
  busy: false,
  image: null, // [H, W, C] bytes of the image to complete
  mask: null, // one byte per pixel: 1 where hidden
  examples: [],
};

/// Runs `job` unless another GPU job is running, with the controls disabled meanwhile
/// (and left disabled, but for the model picker, while no model is loaded).
async function exclusive(job) {
  if (state.busy) return;
  state.busy = true;
  $("error").hidden = true;
  delete document.body.dataset.error;
  const controls = document.querySelectorAll("button, select, input");
  controls.forEach((c) => (c.disabled = true));
  try {
    await job();
  } catch (e) {
    fail(`${e?.message ?? e}`, e);
  } finally {
    state.busy = false;
    controls.forEach((c) => (c.disabled = !state.model && c.id !== "model"));
  }
}

/// The number in input `id`, or `fallback` when it is empty or not a number.
function readNumber(id, fallback) {
  const text = $(id).value.trim();
  const v = Number(text);
  return text !== "" && Number.isFinite(v) ? v : fallback;
}

/// The response for `url`, or an error naming it.
async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load ${url}: HTTP ${response.status}`);
  return response;
}

// ---- Models ----

async function loadModel(index) {
  const entry = state.models[index];
  const bytes = new Uint8Array(await (await fetchOk(entry.file)).arrayBuffer());
  const model = await state.wasm.Model.load(bytes, entry.file);
  state.model?.free();
  state.model = model;
  showModelInfo(entry, JSON.parse(model.describe()), bytes.length);
  await loadExamples();
  document.body.dataset.model = entry.file;
}

/** The residual layers of a single-scale model of architecture `arch`, in words. */
function layersText(arch, d) {
  switch (arch) {
    case "row-lstm":
      return `${d.layers} Row LSTM layers (1 x 3 input-to-state, h = ${d.hidden})`;
    case "diag-bilstm":
      return `${d.layers} Diagonal BiLSTM layers (both directions, h = ${d.hidden})`;
    default:
      return `${d.layers} residual blocks of 3x3 mask-B convolutions (h = ${d.hidden})`;
  }
}

/** A model's architecture, in words; a multi-scale model's two stages. */
function architectureText(d) {
  const single = (arch, title, m) =>
    `${title}: 7x7 mask-A convolution, ${layersText(arch, m)}, output 1x1 layers of ${d.out_hidden} maps`;
  if (!d.stage1) return single(d.model, d.title, d);
  const s = d.stage1;
  return `${d.title}: a ${s.title} of the ${s.size}x${s.size} subsampled image ` +
    `(${layersText(s.model, s)}), then a ${d.arch_title} of the ${d.size}x${d.size} image given it ` +
    `(${layersText(d.arch, d)}; the small image, upsampled by transposed convolutions, enters ` +
    `every layer's input-to-state convolution)`;
}

function showModelInfo(entry, d, bytes) {
  const parameters = d.parameters + (d.stage1?.parameters ?? 0);
  const rows = [
    ["Architecture", architectureText(d)],
    ["Parameters", parameters.toLocaleString("en")],
    ["Images", `${d.size}x${d.size}, ${d.channels === 1 ? "grey" : "RGB"}, 256 levels`],
    ["Trained on", entry.dataset],
    ["Test NLL", entry.test_nll ?? `${entry.test_bits_per_dim.toFixed(3)} bits/dim`],
    ["Training", entry.trained],
    ["Command", `<code>${entry.command}</code>`],
    ["File", `${entry.file} (${(bytes / 1024).toFixed(0)} KiB)`],
    ["Running on", `${d.adapter}${d.subgroup_kernels ? ", subgroup kernels" : ""}`],
  ];
  $("model-info").innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
  const given = d.stage1 ? `, given its subsampled ${d.stage1.size}x${d.stage1.size} image` : "";
  $("surprise-given").textContent = given;
}

// ---- Sampling ----

// How many pixels each readback covers: doubled while a readback comes back within a
// frame, halved when it takes more than two, between one pixel and one row, so that
// the images fill in smoothly without paying for a readback after every pixel.
function pacer(row) {
  let pixels = 1;
  return {
    get pixels() {
      return pixels;
    },
    took(ms) {
      if (ms < 16) pixels = Math.min(2 * pixels, row);
      else if (ms > 33) pixels = Math.max(pixels >> 1, 1);
    },
  };
}

// Advances `sampler` by one paced chunk of pixels and returns whether it is finished.
async function advancePaced(sampler, pace, channels) {
  const t0 = performance.now();
  const finished = await sampler.advance(pace.pixels * channels);
  pace.took(performance.now() - t0);
  return finished;
}

async function sample() {
  const m = state.model;
  const [size, channels] = [m.size(), m.channels()];
  const count = Math.min(Math.max(Math.round(readNumber("count", 4)), 1), 16);
  const seed = BigInt(Math.max(0, Math.round(readNumber("seed", 1))));
  const temperature = Math.max(readNumber("temperature", 1), 0);
  const gallery = $("samples");
  gallery.replaceChildren();
  const canvases = Array.from({ length: count }, () => canvasIn(gallery));
  const status = $("sample-status");
  delete status.dataset.done;

  const started = performance.now();
  let first = null;
  const sampler = m.sampler(count, seed, temperature);
  const dims = size * size * channels;
  const pace = pacer(size);
  try {
    for (;;) {
      const finished = await advancePaced(sampler, pace, channels);
      first ??= performance.now() - started;
      const images = sampler.images();
      canvases.forEach((c, i) => draw(c, images.subarray(i * dims, (i + 1) * dims), size, channels));
      status.textContent = `pixel ${sampler.done() / channels} of ${sampler.total() / channels}`;
      if (finished) break;
    }
  } finally {
    sampler.free();
  }
  const total = performance.now() - started;
  status.textContent = `${count} images in ${(total / 1000).toFixed(1)} s ` +
    `(first pixel after ${first.toFixed(0)} ms, ${(total / count).toFixed(0)} ms per image)`;
  Object.assign(status.dataset, { done: "1", firstPixelMs: first, totalMs: total, count });
}

// ---- Completion ----

async function loadExamples() {
  const m = state.model;
  const list = await (await fetchOk("www/examples/examples.json")).json();
  const gallery = $("examples");
  gallery.replaceChildren();
  state.examples = [];
  for (const file of list) {
    const image = await decode(await (await fetchOk(`www/examples/${file}`)).blob());
    const canvas = canvasIn(gallery);
    canvas.title = file;
    draw(canvas, image, m.size(), m.channels());
    canvas.onclick = () => exclusive(() => choose(image, canvas));
    state.examples.push({ file, image, canvas });
  }
  if (state.examples.length) await choose(state.examples[0].image, state.examples[0].canvas);
}

/// The model's input for a picture the browser can decode, any size or format.
async function decode(blob) {
  // The file's own bytes, as the native loader reads them: no colour management.
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const { width, height } = bitmap;
  const ctx = new OffscreenCanvas(width, height).getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  return state.model.fit_image(new Uint8Array(rgba.buffer), width, height);
}

async function choose(image, chosenCanvas) {
  const m = state.model;
  state.image = image;
  state.mask = new Uint8Array(m.size() * m.size());
  document.querySelectorAll("#examples canvas").forEach((c) => c.classList.toggle("chosen", c === chosenCanvas));
  $("completed").replaceChildren();
  redrawSource();
  await showSurprise();
}

function redrawSource() {
  const m = state.model;
  draw($("source"), state.image, m.size(), m.channels(), state.mask);
}

/// The heat map of -log2 p for the current image and its NLL in bits/dim.
async function showSurprise() {
  const m = state.model;
  const [size, channels] = [m.size(), m.channels()];
  const bits = await m.surprise(state.image);
  const canvas = $("heatmap");
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(size, size);
  for (let p = 0; p < size * size; p++) {
    let b = 0;
    for (let k = 0; k < channels; k++) b += bits[p * channels + k];
    const [r, g, bl] = heat(b / channels);
    out.data.set([r, g, bl, 255], p * 4);
  }
  ctx.putImageData(out, 0, 0);
  const mean = bits.reduce((a, b) => a + b, 0) / bits.length;
  const nll = $("nll");
  nll.textContent = `${mean.toFixed(4)} bits/dim`;
  nll.dataset.bitsPerDim = mean;
}

function hideBottomHalf() {
  const size = state.model.size();
  state.mask.fill(0);
  state.mask.fill(1, Math.floor(size / 2) * size);
  redrawSource();
}

/// Paints the hidden area with the mouse: a 3x3 brush on the pixel under it.
function paint(event) {
  if (!state.mask || state.busy) return;
  const canvas = $("source");
  const size = state.model.size();
  const r = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - r.left) / r.width) * size);
  const y = Math.floor(((event.clientY - r.top) / r.height) * size);
  for (let dy = -1; dy <= 1; dy++) {
    for (let dx = -1; dx <= 1; dx++) {
      const [px, py] = [x + dx, y + dy];
      if (px >= 0 && py >= 0 && px < size && py < size) state.mask[py * size + px] = 1;
    }
  }
  redrawSource();
}

async function complete() {
  const m = state.model;
  const [size, channels] = [m.size(), m.channels()];
  const dims = size * size * channels;
  const count = Math.min(Math.max(Math.round(readNumber("completions", 3)), 1), 8);
  const seed = BigInt(Math.max(0, Math.round(readNumber("seed", 1))));
  const temperature = Math.max(readNumber("temperature", 1), 0);
  const status = $("complete-status");
  delete status.dataset.done;
  if (!state.mask.some((v) => v)) {
    status.textContent = "Nothing is hidden: paint over part of the image first.";
    return;
  }

  // count copies, hidden sub-pixels zeroed so that nothing of them can leak in.
  const known = new Uint8Array(count * dims);
  const images = new Uint8Array(count * dims);
  for (let i = 0; i < count; i++) {
    for (let s = 0; s < dims; s++) {
      const hidden = state.mask[Math.floor(s / channels)];
      known[i * dims + s] = hidden ? 0 : 1;
      images[i * dims + s] = hidden ? 0 : state.image[s];
    }
  }

  const row = $("completed");
  row.replaceChildren();
  const occluded = canvasIn(row);
  draw(occluded, state.image, size, channels, state.mask);
  const canvases = Array.from({ length: count }, () => canvasIn(row, "completion"));
  const original = canvasIn(row);
  draw(original, state.image, size, channels);

  const started = performance.now();
  const sampler = m.completer(images, known, count, seed, temperature);
  const pace = pacer(size);
  try {
    for (;;) {
      const finished = await advancePaced(sampler, pace, channels);
      const now = sampler.images();
      canvases.forEach((c, i) => draw(c, now.subarray(i * dims, (i + 1) * dims), size, channels));
      status.textContent = `pixel ${sampler.done() / channels} of ${sampler.total() / channels}`;
      if (finished) break;
    }
  } finally {
    sampler.free();
  }
  const total = performance.now() - started;
  status.textContent = `occluded, ${count} completions, original: ${(total / 1000).toFixed(1)} s`;
  Object.assign(status.dataset, { done: "1", totalMs: total });
}

// ---- Start ----

async function main() {
  if (!(await haveWebGpu())) return;
  try {
    state.wasm = await import("./pkg/pixelrnn_web.js");
    await state.wasm.default();
  } catch (e) {
    fail("The page's WebAssembly module (www/pkg) is missing or broken: build it with scripts/web.sh.", e);
    return;
  }
  state.models = await (await fetchOk("www/models/models.json")).json();
  const picker = $("model");
  state.models.forEach((m, i) => picker.add(new Option(m.name, i)));
  picker.onchange = () => exclusive(() => loadModel(Number(picker.value)));
  $("sample").onclick = () => exclusive(sample);
  $("complete").onclick = () => exclusive(complete);
  $("bottom-half").onclick = () => !state.busy && hideBottomHalf();
  $("clear-mask").onclick = () => {
    if (state.busy) return;
    state.mask.fill(0);
    redrawSource();
  };
  $("upload").onchange = (e) =>
    exclusive(async () => {
      const file = e.target.files[0];
      e.target.value = ""; // so that choosing the same file again fires again
      if (!file) return;
      let image;
      try {
        image = await decode(file);
      } catch (err) {
        throw new Error(`${file.name}: this browser cannot decode it as an image`);
      }
      await choose(image, null);
    });
  const source = $("source");
  source.onpointerdown = (e) => {
    source.setPointerCapture(e.pointerId);
    paint(e);
  };
  source.onpointermove = (e) => e.buttons && paint(e);

  $("app").hidden = false;
  await exclusive(() => loadModel(0));
  if (!document.body.dataset.error) document.body.dataset.ready = "1";
}

main();
