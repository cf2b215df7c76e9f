#!/usr/bin/env node
// Check the built book in headless Chromium, page by page, with the network cut off.
//
//   node scripts/browser_check.js [HTML_DIR] [SHOTS_DIR] [--toc _toc.yml]
//
// HTML_DIR defaults to _build/html, SHOTS_DIR to shots/, the toc to the repository's
// _toc.yml. Set CHROMIUM to use a browser other than /usr/bin/chromium. Needs
// `npm ci --prefix scripts` (playwright-core, pinned in scripts/package.json).
//
// For every page in the toc it checks that:
//   - the page asks for nothing outside file: (every other request is blocked and
//     counts as a failure), and every local file it loads exists;
//   - MathJax typeset every math element, with no TeX errors and no raw TeX left;
//   - no cell shows a Python traceback or an error on stderr;
//   - every local link (href, src) points to a file that exists, and to an anchor
//     that exists in it;
//   - no JavaScript error was thrown or logged;
//   - every widget slider moves with the keyboard and changes the image beside it,
//     and every Play button advances its slider.
// Screenshots of each page and each slider go to SHOTS_DIR. Exit status 1 on any failure.
"use strict";

const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const REPO = path.resolve(__dirname, "..");
const WAIT_MS = 20000; // for MathJax and the widget manager to finish
const PLAY_MS = 1500; // how long Play runs before we look

// Known, harmless JavaScript errors from the build tools, not from the book.
const KNOWN_JS_ERRORS = [
  // sphinx-thebe 0.3.1 under Sphinx 7.4 writes its inline config <script> twice; the
  // second copy fails to redeclare a const. Thebe only starts from its launch button.
  /Identifier 'THEBE_JS_URL' has already been declared/,
];

function parseArgs(argv) {
  const args = { html: path.join(REPO, "_build", "html"), shots: path.resolve("shots"),
                 toc: path.join(REPO, "_toc.yml") };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--toc") args.toc = path.resolve(argv[++i]);
    else if (argv[i] === "-h" || argv[i] === "--help") {
      console.log("usage: node scripts/browser_check.js [HTML_DIR] [SHOTS_DIR] [--toc _toc.yml]");
      process.exit(0);
    } else positional.push(argv[i]);
  }
  if (positional[0]) args.html = path.resolve(positional[0]);
  if (positional[1]) args.shots = path.resolve(positional[1]);
  return args;
}

// The documents named by `root:` and `file:` in a jb-book toc, in reading order.
function tocDocs(tocPath) {
  const text = fs.readFileSync(tocPath, "utf8").replace(/(^|\s)#.*$/gm, "");
  const docs = [...text.matchAll(/^\s*(?:-\s*)?(?:root|file):\s*["']?([^"'\s]+)/gm)].map((m) => m[1]);
  return docs.map((d) => d.replace(/\.(md|ipynb|rst)$/, ""));
}

// Does a local URL point to an existing file (and anchor)? Returns an error or null.
const fileCache = new Map();
function checkLocalUrl(url) {
  const target = new URL(url);
  let file = decodeURIComponent(target.pathname);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, "index.html");
  if (!fs.existsSync(file)) return `missing file ${file}`;
  const anchor = decodeURIComponent(target.hash.slice(1));
  if (!anchor || !file.endsWith(".html")) return null;
  if (!fileCache.has(file)) fileCache.set(file, fs.readFileSync(file, "utf8"));
  const html = fileCache.get(file);
  const escaped = anchor.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  if (!new RegExp(`(id|name)=["']${escaped}["']`).test(html)) return `missing anchor #${anchor} in ${file}`;
  return null;
}

// ---- checks that run inside the page -------------------------------------------------

function mathStatusInPage() {
  const maths = [...document.querySelectorAll(".math")];
  const untypeset = maths.filter((m) => !m.querySelector("mjx-container"));
  const skip = "script, style, pre, code, textarea, noscript, svg, mjx-container, .highlight";
  const raw = [/\$\$/, /\\begin\{/, /\\[()[\]]/, /\\[A-Za-z]{2,}/, /(^|[^\w$])\$[^$\s][^$\n]{0,100}\$/];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => (n.parentElement && n.parentElement.closest(skip)
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const rawTex = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (raw.some((r) => r.test(n.textContent))) rawTex.push(n.textContent.trim().slice(0, 80));
  }
  return { maths: maths.length, untypeset: untypeset.length,
           containers: document.querySelectorAll("mjx-container").length,
           texErrors: document.querySelectorAll("mjx-merror").length, rawTex };
}

function errorOutputsInPage() {
  const found = [];
  const text = (e) => e.innerText.trim().replace(/\s+/g, " ").slice(0, 160);
  document.querySelectorAll(".output.traceback, .output.error").forEach((e) => found.push(`error output: ${text(e)}`));
  document.querySelectorAll(".output.stderr").forEach((e) => {
    if (/Traceback|Error\b|Exception\b/.test(e.innerText)) found.push(`stderr: ${text(e)}`);
  });
  document.querySelectorAll(".cell_output").forEach((e) => {
    if (/Traceback \(most recent call last\)/.test(e.innerText)) found.push(`traceback: ${text(e)}`);
  });
  return found;
}

function localUrlsInPage() {
  const sel = "a[href], img[src], script[src], link[href], source[src], iframe[src], video[src]";
  return [...document.querySelectorAll(sel)]
    .map((e) => (e.tagName === "A" || e.tagName === "LINK" ? e.href : e.src))
    .filter((u) => typeof u === "string" && u.startsWith("file:"));
}

// Widget views embedded in the page, and how many of them the manager drew.
function widgetStatusInPage() {
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const drawn = views.filter((s) => s.parentElement.querySelector(".jupyter-widgets"));
  return { views: views.length, drawn: drawn.length };
}

function allWidgetsDrawnInPage() {
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  return views.every((s) => s.parentElement.querySelector(".jupyter-widgets"));
}

// ---- one page ------------------------------------------------------------------------

async function checkPage(context, htmlDir, doc, shots) {
  const failures = [];
  const notes = [];
  const fail = (msg) => failures.push(msg);
  const slug = doc.replace(/[\\/]/g, "_");
  const file = path.join(htmlDir, `${doc}.html`);
  if (!fs.existsSync(file)) return { doc, failures: [`page not built: ${file}`], notes };

  const page = await context.newPage();
  const blocked = [];
  const missing = [];
  const jsErrors = [];
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (/^(file|data|blob):/.test(url)) return route.continue();
    blocked.push(url);
    return route.abort();
  });
  page.on("requestfailed", (r) => {
    if (r.url().startsWith("file:")) missing.push(`${r.url()} (${r.failure().errorText})`);
  });
  const jsError = (msg) => { if (!KNOWN_JS_ERRORS.some((r) => r.test(msg))) jsErrors.push(msg); };
  page.on("pageerror", (e) => jsError(String(e)));
  page.on("console", (m) => { if (m.type() === "error") jsError(`console: ${m.text()}`); });

  await page.goto(`file://${file}`, { waitUntil: "load" });

  // Widgets first: their labels are typeset too.
  const widgets = await page.evaluate(widgetStatusInPage);
  if (widgets.views > 0) {
    await page.waitForFunction(allWidgetsDrawnInPage, null, { timeout: WAIT_MS }).catch(() => {});
    const now = await page.evaluate(widgetStatusInPage);
    if (now.drawn !== now.views) fail(`widgets: only ${now.drawn} of ${now.views} views drawn`);
    notes.push(`${now.drawn}/${now.views} widget views drawn`);
  }
  // MathJax: wait for it to start (if the page loads it), then for the widget
  // labels it typesets after start-up.
  const hasMathJax = await page.evaluate(() => window.MathJax !== undefined);
  const mathjaxReady = hasMathJax && await page.waitForFunction(
    () => window.MathJax.version && window.MathJax.startup && window.MathJax.startup.promise,
    null, { timeout: WAIT_MS })
    .then(() => page.evaluate(() => window.MathJax.startup.promise.then(() => true)))
    .catch(() => false);
  await page.waitForFunction(() => [...document.querySelectorAll(".jupyter-widgets .widget-label")]
    .every((l) => !/\\\(/.test(l.textContent) || l.querySelector("mjx-container")),
  null, { timeout: 5000 }).catch(() => {});

  const math = await page.evaluate(mathStatusInPage);
  if (math.maths > 0 && !mathjaxReady) fail("MathJax did not start");
  if (math.untypeset > 0) fail(`MathJax: ${math.untypeset} of ${math.maths} math elements not typeset`);
  if (math.texErrors > 0) fail(`MathJax: ${math.texErrors} TeX error(s) (mjx-merror)`);
  for (const t of math.rawTex) fail(`raw TeX left in the text: "${t}"`);
  notes.push(`${math.maths} math elements, ${math.containers} typeset`);

  for (const e of await page.evaluate(errorOutputsInPage)) fail(e);

  const urls = [...new Set(await page.evaluate(localUrlsInPage))];
  for (const url of urls) {
    const err = checkLocalUrl(url);
    if (err) fail(`broken link ${url}: ${err}`);
  }
  notes.push(`${urls.length} local links`);

  await page.screenshot({ path: path.join(shots, `${slug}.png`), fullPage: true });
  await checkSliders(page, slug, shots, fail, notes);

  for (const u of blocked) fail(`network request (blocked): ${u}`);
  for (const u of missing) fail(`missing local file: ${u}`);
  for (const e of jsErrors) fail(`JavaScript error: ${e}`);
  await page.close();
  return { doc, failures, notes };
}

// Each slider: ArrowRight must change its readout and the image shown next to it;
// each Play button must advance its slider.
async function checkSliders(page, slug, shots, fail, notes) {
  const sliders = page.locator(".widget-slider");
  const n = await sliders.count();
  for (let i = 0; i < n; i++) {
    const name = `slider ${i + 1}/${n}`;
    const slider = sliders.nth(i);
    const handle = slider.locator(".noUi-handle").first();
    const readout = slider.locator(".widget-readout").first();
    // The cell output holding the slider: its Play button and its image live there too.
    const outputs = slider.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' cell_output ')]");
    const box = (await outputs.count()) ? outputs.first() : slider.locator("xpath=..");
    const image = box.locator("img.widget-image:visible").first();
    const shown = async () => ({
      readout: (await readout.textContent()).trim(),
      src: (await image.count()) ? await image.getAttribute("src") : null,
    });
    const shot = (tag) => box.screenshot({ path: path.join(shots, `${slug}__slider${i + 1}_${tag}.png`) });
    if ((await handle.count()) === 0) { fail(`${name}: no slider handle drawn`); continue; }

    await box.scrollIntoViewIfNeeded();
    await handle.focus();
    await page.keyboard.press("Home");
    await page.waitForTimeout(200);
    const before = await shown();
    await shot("before");
    await handle.focus();
    await page.keyboard.press("ArrowRight");
    await page.waitForTimeout(300);
    const after = await shown();
    await shot("after_key");
    notes.push(`${name}: ArrowRight moved readout ${before.readout} -> ${after.readout}`);
    if (after.readout === before.readout) fail(`${name}: ArrowRight did not move the slider (readout ${before.readout})`);
    if (before.src !== null && after.src === before.src) fail(`${name}: the image did not change with the slider`);

    const play = box.locator(".widget-play button").first();
    if ((await play.count()) === 0) continue;
    await handle.focus();
    await page.keyboard.press("Home");
    await page.waitForTimeout(200);
    const start = await shown();
    await play.click();
    await page.waitForTimeout(PLAY_MS);
    const played = await shown();
    await shot("after_play");
    notes.push(`${name}: Play moved readout ${start.readout} -> ${played.readout} in ${PLAY_MS} ms`);
    if (played.readout === start.readout) fail(`${name}: Play did not advance the slider`);
    else if (start.src !== null && played.src === start.src) fail(`${name}: Play did not change the image`);
  }
  if (n > 0) notes.push(`${n} slider(s) checked`);
}

// ---- main ----------------------------------------------------------------------------

(async () => {
  const args = parseArgs(process.argv.slice(2));
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) {
    console.error(`no Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
    process.exit(2);
  }
  if (!fs.existsSync(args.html)) {
    console.error(`no built book at ${args.html} (run make book first)`);
    process.exit(2);
  }
  const docs = tocDocs(args.toc);
  if (docs.length === 0) {
    console.error(`no pages found in ${args.toc}`);
    process.exit(2);
  }
  fs.mkdirSync(args.shots, { recursive: true });

  const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  let failed = 0;
  for (const doc of docs) {
    const { failures, notes } = await checkPage(context, args.html, doc, args.shots);
    console.log(`${failures.length ? "FAIL" : "PASS"} ${doc}.html  (${notes.join("; ")})`);
    for (const f of failures) console.log(`     - ${f}`);
    if (failures.length) failed++;
  }
  await browser.close();
  console.log(`${docs.length - failed}/${docs.length} pages passed; screenshots in ${args.shots}`);
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
