// Drives Debian's Chromium through one visitor journey on the touchgate
// demo and prints what the browser saw as one JSON object on stdout.
// tests/browser.rs runs it and checks the result against the events on disk.
//
//   node drive.cjs '{"base": "http://127.0.0.1:PORT", "landing": "/?utm_…",
//                    "email": "…", "plan": "team", "javascript": true}'
//
// playwright-core is required from $TG_NODE_MODULES (where the test ran
// `npm ci`), so nothing is installed into the source tree.
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.env.TG_NODE_MODULES || "node_modules", "playwright-core"));

const STEP_TIMEOUT_MS = 15000;
const TOTAL_TIMEOUT_MS = 60000;

async function journey(browser, opts) {
  const context = await browser.newContext({ javaScriptEnabled: opts.javascript });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });
  const beacons = [];
  page.on("request", (r) => {
    if (new URL(r.url()).pathname === "/_tg/b") beacons.push({ method: r.method(), body: r.postData() });
  });

  const landing = await page.goto(opts.base + opts.landing, { waitUntil: "load" });
  const landingStatus = landing ? landing.status() : null;
  // Only the landing's response matters here: the snippet has loaded (or
  // not, without JavaScript) once `load` fired.
  const snippetLoaded = opts.javascript
    ? await page.evaluate(() => performance.getEntriesByType("resource").some((e) => e.name.endsWith("/_tg/c.js")))
    : null;
  const documentCookie = opts.javascript ? await page.evaluate(() => document.cookie) : null;
  const touchPanel = await page.textContent("#touch");

  // The visitor clicks through to the form, as a visitor would.
  await Promise.all([page.waitForURL("**/signup", { waitUntil: "load" }), page.click("nav a[href='/signup']")]);
  if (opts.layoutShift) {
    // A late banner above the form, as ads and consent bars do: the form
    // moves down. Before any input, so the shift counts towards CLS.
    await page.evaluate(() => {
      const b = document.createElement("div");
      b.style.height = "240px";
      b.textContent = "late banner";
      document.body.insertBefore(b, document.body.firstChild);
    });
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.waitForTimeout(600);
  }
  await page.fill("input[name=email]", opts.email);
  await page.selectOption("select[name=plan]", opts.plan);
  const [formRequest] = await Promise.all([
    page.waitForRequest((r) => r.method() === "POST" && new URL(r.url()).pathname === "/signup"),
    page.click("button[type=submit]"),
  ]);
  const formResponse = await formRequest.response();
  await page.waitForLoadState("load");
  // sendBeacon is fire-and-forget: give it a bounded moment to be seen.
  if (opts.javascript) {
    for (let i = 0; i < 40 && beacons.length === 0; i++) await page.waitForTimeout(50);
  }

  const result = {
    snippetGzipBytes: await gzipLength(opts.base + "/_tg/c.js"),
    landingStatus,
    snippetLoaded,
    documentCookie,
    touchPanel,
    formBody: formRequest.postData(),
    formStatus: formResponse ? formResponse.status() : null,
    finalUrl: page.url(),
    finalHeading: await page.textContent("h1"),
    beacons,
    cookies: await context.cookies(),
    pageErrors,
  };
  await context.close();
  return result;
}

// The snippet's size on the wire, gzipped as a browser asks for it.
function gzipLength(url) {
  return new Promise((resolve, reject) => {
    require("http")
      .get(url, { headers: { "accept-encoding": "gzip" } }, (res) => {
        let n = 0;
        res.on("data", (c) => (n += c.length));
        res.on("end", () => resolve(res.headers["content-encoding"] === "gzip" ? n : null));
      })
      .on("error", reject);
  });
}

async function main() {
  const opts = JSON.parse(process.argv[2]);
  const browser = await chromium.launch({
    executablePath: process.env.TG_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Without the background-networking flags Chromium tries to reach
    // Google's hosts at start; nothing here may leave 127.0.0.1.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: STEP_TIMEOUT_MS,
  });
  try {
    const result = await journey(browser, opts);
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    await browser.close();
  }
}

// A hard bound: whatever hangs, the browser is closed and the process ends.
const watchdog = setTimeout(() => {
  process.stderr.write(`drive.cjs: no result after ${TOTAL_TIMEOUT_MS} ms\n`);
  process.exit(3);
}, TOTAL_TIMEOUT_MS);

main().then(
  () => clearTimeout(watchdog),
  (e) => {
    process.stderr.write(`drive.cjs: ${e && e.stack ? e.stack : e}\n`);
    process.exit(2);
  },
);
