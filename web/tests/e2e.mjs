// The page end to end in headless Chromium with SwiftShader's WebGPU: likelihood,
// sampling and completion agree with the native `pixelrnn` command on the same
// weights, and a browser without WebGPU is told so. Screenshots go to runs/web/.
//
//   node web/tests/e2e.mjs        (after scripts/web.sh --build-only and a cargo build)
//
// PIXELRNN names the native binary (default: target/debug/pixelrnn, else
// target/release/pixelrnn). Prints one JSON line of timings last.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const shots = join(root, "runs/web");
const pixelrnn = process.env.PIXELRNN ??
  ["target/debug/pixelrnn", "target/release/pixelrnn"].map((p) => join(root, p)).find(existsSync);
const SEED = 1;
const COUNT = 2;

// Chromium's flags for a headless machine with no network. Compute through WebGPU
// needs --enable-unsafe-webgpu alone, since the page draws with a 2D canvas.
const quiet = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--disable-quic"];

async function launch(webgpu) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: webgpu ? [...quiet, "--enable-unsafe-webgpu"] : quiet,
  });
}

function native(args) {
  return execFileSync(pixelrnn, args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

const TYPES = {
  ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
  ".png": "image/png", ".wasm": "application/wasm",
};

/// Serves the repository root on a free port of 127.0.0.1; resolves to [server, address].
function serve() {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const file = join(root, path.endsWith("/") ? `${path}index.html` : path);
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () =>
    ok([server, `http://127.0.0.1:${server.address().port}/`])));
}

/// Waits until the status element `id` says it is done, failing with the page's error.
async function finished(page, id) {
  await page.waitForFunction((id) => document.getElementById(id).dataset.done || document.body.dataset.error,
    id, { timeout: 600_000 });
  const error = await page.evaluate(() => document.body.dataset.error);
  assert.equal(error, undefined, `the page failed: ${error}`);
}

/// The [H, W] grey bytes of every canvas matching `selector`.
function canvases(page, selector) {
  return page.$$eval(selector, (list) =>
    list.map((c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      return Array.from({ length: c.width * c.height }, (_, p) => d[p * 4]);
    }));
}

/// The cells of a `pixelrnn sample` PNG grid (4x scale, 4-pixel gaps) as grey bytes,
/// decoded by the browser.
function gridCells(page, png, count, size) {
  return page.evaluate(async ({ b64, count, size }) => {
    const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${b64}`)).blob());
    const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    const cols = Math.ceil(Math.sqrt(count));
    const [scale, gap] = [4, 4];
    const cells = [];
    for (let n = 0; n < count; n++) {
      const [r, c] = [Math.floor(n / cols), n % cols];
      const x0 = gap + c * (size * scale + gap);
      const y0 = gap + r * (size * scale + gap);
      const d = ctx.getImageData(x0, y0, size * scale, size * scale).data;
      const cell = [];
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) cell.push(d[(y * scale * size * scale + x * scale) * 4]);
      }
      cells.push(cell);
    }
    return cells;
  }, { b64: png.toString("base64"), count, size });
}

function distinct(values) {
  return new Set(values).size;
}

async function main() {
  assert.ok(pixelrnn, "no pixelrnn binary: build it first (cargo build -p pixelrnn-cli)");
  mkdirSync(shots, { recursive: true });
  // The smallest shipped model keeps the test short.
  const models = JSON.parse(readFileSync(join(root, "www/models/models.json"), "utf8"));
  const sizes = models.map((m) => statSync(join(root, m.file)).size);
  const chosen = sizes.indexOf(Math.min(...sizes));
  const model = models[chosen].file;
  const [server, site] = await serve();
  const timings = {};
  try {
    const browser = await launch(true);
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(site);
    await page.waitForFunction(() => document.body.dataset.ready || document.body.dataset.error,
      null, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.error), undefined);
    if (chosen !== 0) {
      await page.selectOption("#model", String(chosen));
      await page.waitForFunction((file) => document.body.dataset.model === file || document.body.dataset.error,
        model, { timeout: 120_000 });
      assert.equal(await page.evaluate(() => document.body.dataset.error), undefined);
    }

    // Likelihood: the first bundled example is test image 0, scored natively too.
    const browserBits = Number(await page.getAttribute("#nll", "data-bits-per-dim"));
    const ours = JSON.parse(native(["eval", "--checkpoint", model, "--data", "fashion-mnist",
      "--limit", "1", "--json"]));
    const gap = Math.abs(browserBits - ours.bits_per_dim) / ours.bits_per_dim;
    console.log(`NLL of test image 0: browser ${browserBits}, native ${ours.bits_per_dim} bits/dim`);
    assert.ok(gap < 1e-4, `browser and native NLL differ by ${gap} (relative)`);

    // Sampling, with a ticker measuring the longest pause of the page's main thread.
    await page.fill("#count", String(COUNT));
    await page.fill("#seed", String(SEED));
    await page.fill("#temperature", "1");
    await page.evaluate(() => {
      window.longestPause = 0;
      let last = performance.now();
      window.ticker = setInterval(() => {
        const now = performance.now();
        window.longestPause = Math.max(window.longestPause, now - last);
        last = now;
      }, 20);
    });
    await page.click("#sample");
    await finished(page, "sample-status");
    const status = await page.$eval("#sample-status", (s) => ({ ...s.dataset }));
    timings.browser_first_pixel_ms = Number(status.firstPixelMs);
    timings.browser_ms_per_image = Number(status.totalMs) / COUNT;
    timings.browser_longest_pause_ms = await page.evaluate(() => {
      clearInterval(window.ticker);
      return window.longestPause;
    });
    assert.ok(timings.browser_longest_pause_ms < 1000,
      `the page froze for ${timings.browser_longest_pause_ms} ms while sampling`);
    await page.screenshot({ path: join(shots, "sample.png"), fullPage: true });

    const samples = await canvases(page, "#samples canvas");
    assert.equal(samples.length, COUNT);
    for (const s of samples) {
      assert.ok(distinct(s) > 10, `a sample has only ${distinct(s)} grey levels`);
    }

    // The same seed natively gives the same images.
    const png = join(shots, "native-samples.png");
    const line = native(["sample", "--checkpoint", model, "--count", String(COUNT),
      "--seed", String(SEED), "--temperature", "1", "--out", png]);
    timings.native_first_row_ms = Number(line.match(/first row after (\d+) ms/)[1]);
    timings.native_ms_per_image = Number(line.match(/(\d+) ms per image/)[1]);
    const size = Math.sqrt(samples[0].length);
    const nativeSamples = await gridCells(page, readFileSync(png), COUNT, size);
    for (let i = 0; i < COUNT; i++) {
      const same = samples[i].filter((v, p) => v === nativeSamples[i][p]).length;
      assert.equal(same, samples[i].length,
        `sample ${i}: ${same} of ${samples[i].length} pixels agree with the native sample`);
    }

    // An upload of another size and colour depth is fitted to the model and scored.
    const [before] = await canvases(page, "#source");
    await page.setInputFiles("#upload", png);
    await page.waitForFunction((prev) => document.getElementById("nll").dataset.bitsPerDim !== prev ||
      document.body.dataset.error, String(browserBits), { timeout: 60_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.error), undefined);
    const [fitted] = await canvases(page, "#source");
    assert.notDeepEqual(fitted, before, "the uploaded picture is not shown");
    assert.ok(distinct(fitted) > 10, `the fitted upload has ${distinct(fitted)} grey levels`);
    assert.ok(Number(await page.getAttribute("#nll", "data-bits-per-dim")) > 0);

    // Completion of the bottom half of a bundled image.
    await page.click("#examples canvas:nth-child(2)");
    await page.click("#bottom-half");
    await page.fill("#completions", "2");
    await page.click("#complete");
    await finished(page, "complete-status");
    await page.screenshot({ path: join(shots, "complete.png"), fullPage: true });
    const row = await canvases(page, "#completed canvas");
    assert.equal(row.length, 4, "occluded, 2 completions, original");
    const original = row[3];
    const half = (size / 2) * size;
    for (const done of row.slice(1, 3)) {
      assert.deepEqual(done.slice(0, half), original.slice(0, half), "the known top half changed");
      const bottom = done.slice(half);
      assert.ok(bottom.some((v) => v > 0) && distinct(bottom) > 5, "the bottom half was not filled");
    }
    assert.ok(row[0].slice(half).every((v) => v === 128), "the occluded image shows the hole");

    // The multi-scale model: the page scores an image as the native second stage does
    // (given its subsampled image), and its two stages draw what they draw natively.
    const ms = models.findIndex((m) => m.file.includes("multiscale"));
    assert.ok(ms >= 0, "no multi-scale model is shipped");
    const msFile = models[ms].file;
    await page.selectOption("#model", String(ms));
    await page.waitForFunction((file) => document.body.dataset.model === file || document.body.dataset.error,
      msFile, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.error), undefined);
    const msBits = Number(await page.getAttribute("#nll", "data-bits-per-dim"));
    const msOurs = JSON.parse(native(["eval", "--checkpoint", msFile, "--data", "fashion-mnist",
      "--limit", "1", "--json"]));
    assert.equal(msOurs.model, "multiscale");
    console.log(`multi-scale NLL of test image 0: browser ${msBits}, native ${msOurs.bits_per_dim} bits/dim`);
    assert.ok(Math.abs(msBits - msOurs.bits_per_dim) / msOurs.bits_per_dim < 1e-4,
      "browser and native multi-scale NLL differ");
    await page.fill("#count", "1");
    await page.click("#sample");
    await finished(page, "sample-status");
    const msStatus = await page.$eval("#sample-status", (s) => ({ ...s.dataset }));
    timings.browser_multiscale_ms_per_image = Number(msStatus.totalMs);
    await page.screenshot({ path: join(shots, "sample-multiscale.png"), fullPage: true });
    const [msSample] = await canvases(page, "#samples canvas");
    const msPng = join(shots, "native-multiscale.png");
    native(["sample", "--checkpoint", msFile, "--count", "1", "--seed", String(SEED),
      "--temperature", "1", "--out", msPng]);
    const [msNative] = await gridCells(page, readFileSync(msPng), 1, size);
    const msSame = msSample.filter((v, p) => v === msNative[p]).length;
    assert.equal(msSame, msSample.length,
      `multi-scale sample: ${msSame} of ${msSample.length} pixels agree with the native sample`);
    // And completes a bottom half with both stages, keeping the top half.
    await page.click("#examples canvas:nth-child(2)");
    await page.click("#bottom-half");
    await page.click("#complete");
    await finished(page, "complete-status");
    await page.screenshot({ path: join(shots, "complete-multiscale.png"), fullPage: true });
    const msRow = await canvases(page, "#completed canvas");
    assert.equal(msRow.length, 4, "occluded, 2 completions, original");
    for (const done of msRow.slice(1, 3)) {
      assert.deepEqual(done.slice(0, half), msRow[3].slice(0, half), "multi-scale: the known top half changed");
      const bottom = done.slice(half);
      assert.ok(bottom.some((v) => v > 0) && distinct(bottom) > 5, "multi-scale: the bottom half was not filled");
    }
    assert.deepEqual(errors, [], "uncaught errors on the page");

    // A broken checkpoint: the page names the file and what is wrong with it.
    const broken = await browser.newPage();
    await broken.route("**/*.safetensors", (route) => route.fulfill({ body: "not a checkpoint" }));
    await broken.goto(site);
    await broken.waitForFunction(() => document.body.dataset.error, null, { timeout: 60_000 });
    const message = await broken.textContent("#error");
    assert.ok(message.includes(models[0].file) && (await broken.isVisible("#error")), message);
    console.log(`a broken checkpoint: "${message}"`);
    await browser.close();

    // No WebGPU, with the flag off (no adapter) or without navigator.gpu at all: the
    // page says so in words, and nothing else goes wrong.
    const plain = await launch(false);
    for (const [name, hide] of [["no-webgpu", false], ["no-navigator-gpu", true]]) {
      const bare = await plain.newPage();
      if (hide) await bare.addInitScript(() => delete Navigator.prototype.gpu);
      await bare.goto(site);
      await bare.waitForFunction(() => document.body.dataset.webgpu === "missing", null, { timeout: 60_000 });
      const text = await bare.textContent("#no-webgpu");
      assert.ok(await bare.isVisible("#no-webgpu") && /needs WebGPU/.test(text), text);
      assert.equal(await bare.evaluate(() => document.body.dataset.error), undefined);
      console.log(`${name}: "${text.trim().split("\n")[0]}"`);
      await bare.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
    }
    await plain.close();
  } finally {
    server.close();
  }
  console.log(`screenshots in ${shots}`);
  console.log(JSON.stringify(timings));
}

main().catch((e) => {
  console.error(`e2e: ${e.message}`);
  process.exit(1);
});
