// The page of `p2p-wgpu serve` in a real browser (the system's headless Chromium through playwright-core): type a
// prompt and generate; click word chips to set a swap and a reweight; run the edit; check that the result images
// load and differ, that the clicked token's attention overlay is drawn, and that a bad edit shows the CLI's error
// line; upload a picture and edit it from its inversion. Saves screenshots before and after the edit. Prints the click-to-first-preview and click-to-image times.
//
//   node tests/browser/page.test.mjs [--model DIR] [--prompt TEXT --swap WORD=NEW --reweight WORD=C] [--steps N]
//        [--screenshots DIR] [--picture FILE]
// Defaults: the tiny SD fixture, 3 steps, screenshots to $TMPDIR. Exits 0 on success, 1 with the reason.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const arg = (name, dflt) => {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const model = arg("model", join(root, "tests/fixtures/sd1-tiny"));
const prompt = arg("prompt", "a red bicycle on a hill");
const [swapWord, swapTo] = arg("swap", "bicycle=car").split("=");
const [weightWord, weight] = arg("reweight", "red=2").split("=");
const steps = arg("steps", "3");
const shots = arg("screenshots", tmpdir());
const bin = process.env.P2P_WGPU_BIN || join(root, "target/release/p2p-wgpu");
const limitMs = Number(process.env.P2P_BROWSER_TEST_LIMIT_MS || 600000);

function fail(msg) {
  console.error("browser test: FAILED: " + msg);
  process.exitCode = 1;
  throw new Error(msg);
}

function startServer() {
  return new Promise((ok, bad) => {
    const p = spawn(bin, ["serve", "--model", model, "--listen", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
    let buf = "";
    p.stderr.on("data", (d) => {
      buf += d.toString();
      const m = buf.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) ok({ proc: p, url: `http://127.0.0.1:${m[1]}/` });
    });
    p.on("exit", (code) => bad(new Error(`serve exited (${code}): ${buf}`)));
  });
}

// Clicks `sel` with the status line cleared first, so that waitStatus sees this run's status, not the last one's.
async function clickAndRun(page, sel) {
  await page.$eval("#status", (el) => { el.textContent = ""; });
  await page.click(sel);
}

async function waitStatus(page, prefix, ms) {
  await page.waitForFunction((p) => document.getElementById("status").textContent.startsWith(p) ||
    document.getElementById("error").textContent !== "", prefix, { timeout: ms });
  const err = await page.textContent("#error");
  if (err) fail(`expected "${prefix}", the page shows the error: ${err}`);
  return page.textContent("#status");
}

async function setRange(page, sel, value) {
  await page.$eval(sel, (el, v) => { el.value = v; el.dispatchEvent(new Event("input", { bubbles: true })); }, value);
}

let server, browser;
const timer = setTimeout(() => { console.error("browser test: over the time limit"); process.exit(1); }, limitMs);
try {
  server = await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const outside = [];
  page.on("request", (r) => { if (!r.url().startsWith(server.url) && !r.url().startsWith("data:")) outside.push(r.url()); });
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(server.url);
  await page.fill("#prompt", prompt);
  await page.fill("#seed", "1");
  await page.fill("#steps", steps);
  await page.waitForSelector(`.chip[data-word="${swapWord}"]`);

  // Generate (Enter in the prompt box).
  await page.$eval("#status", (el) => { el.textContent = ""; });
  await page.press("#prompt", "Enter");
  const gen = await waitStatus(page, "done", limitMs);
  console.log("browser test: generate: " + gen);
  await page.waitForFunction(() => [...document.querySelectorAll("#images img")].some((i) => i.complete && i.naturalWidth > 0));
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, "serve-before.png") });

  // Click chips: a swap and a reweight.
  await page.click(`.chip[data-word="${weightWord}"]`);
  await setRange(page, "#reweight", weight);
  await page.click(`.chip[data-word="${weightWord}"]`);
  await page.click(`.chip[data-word="${swapWord}"]`);
  await page.fill("#swap-to", swapTo);
  await page.dispatchEvent("#swap-to", "input");
  const cmd = await page.textContent("#command");
  if (!cmd.includes(`--swap ${swapWord}=${swapTo}`) || !cmd.includes(`--reweight ${weightWord}=${weight}`)) {
    fail("the command line does not show the edit: " + cmd);
  }
  const t0 = Date.now();
  await clickAndRun(page, "#edit");
  const status = await waitStatus(page, "done", limitMs);
  console.log(`browser test: edit (${cmd}): ${status}; ${((Date.now() - t0) / 1000).toFixed(1)} s from the click`);
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll("#images img")];
    return imgs.length >= 2 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  });
  // The images differ (pixels compared in the page).
  const differ = await page.evaluate(() => {
    const imgs = [...document.querySelectorAll("#images img")];
    const px = (img) => {
      const c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const x = c.getContext("2d");
      x.drawImage(img, 0, 0);
      return x.getImageData(0, 0, c.width, c.height).data;
    };
    const a = px(imgs[0]), b = px(imgs[1]);
    let d = 0;
    for (let i = 0; i < a.length; i++) d += Math.abs(a[i] - b[i]);
    return d / a.length;
  });
  if (!(differ > 0.5)) fail(`source and edit do not differ (mean |Δ| ${differ})`);
  // The selected chip's attention overlay is drawn on every row.
  const overlay = await page.evaluate(() => [...document.querySelectorAll("#images canvas")].map((c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let alpha = 0;
    for (let i = 3; i < d.length; i += 4) alpha = Math.max(alpha, d[i]);
    return { token: c.dataset.token, width: c.width, alpha };
  }));
  if (overlay.length < 2 || overlay.some((o) => o.token !== swapWord || o.width < 2 || o.alpha === 0)) {
    fail("no attention overlay for the clicked token: " + JSON.stringify(overlay));
  }
  await page.screenshot({ path: join(shots, "serve-after.png") });

  // A bad edit shows the CLI's one-line message.
  await page.fill("#steps", "0");
  await page.click("#edit");
  await page.waitForFunction(() => document.getElementById("error").textContent !== "");
  const err = await page.textContent("#error");
  if (!err.includes("--steps")) fail("the error line does not name --steps: " + err);
  // A picture uploaded from a file and edited from its inversion (the tiny fixture's test picture by default).
  const picture = arg("picture", model.endsWith("sd1-tiny") ? join(root, "tests/fixtures/inversion/input.png") : "");
  if (picture) {
    await page.fill("#steps", "2");
    await page.setInputFiles("#picture", picture);
    await page.waitForFunction(() => !document.getElementById("picture-thumb").hidden);
    await clickAndRun(page, "#edit");
    const s = await waitStatus(page, "done", limitMs);
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll("#images img")];
      return imgs.length === 3 && imgs[0].alt === "input.png" && imgs.every((i) => i.complete && i.naturalWidth > 0);
    }, null, { timeout: 30000 }).catch(() => fail("the picture edit does not show input | source | edit"));
    console.log("browser test: picture edit: " + s);
  }
  if (outside.length) fail("the page fetched other origins: " + outside.join(", "));
  if (consoleErrors.length) fail("script errors: " + consoleErrors.join("; "));
  console.log(`browser test: passed (mean pixel difference ${differ.toFixed(1)}, error shown: ${err}); screenshots in ${shots}`);
} catch (e) {
  if (!process.exitCode) console.error("browser test: FAILED: " + e.message);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  if (browser) await browser.close();
  if (server) server.proc.kill();
}
