// Drives Debian's Chromium through the Django admin login behind touchgate:
// a wrong password, then the right one, as a person at the keyboard would.
// Prints what the browser saw as one JSON object on stdout; tests/frameworks.rs
// checks it against the events touchgate wrote.
//
//   node drive_django_login.cjs '{"base": "http://127.0.0.1:PORT",
//                                 "username": "…", "wrong": "…", "right": "…"}'
//
// playwright-core is required from $TG_NODE_MODULES (installed by the test).
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.env.TG_NODE_MODULES || "node_modules", "playwright-core"));

const STEP_TIMEOUT_MS = 15000;
const TOTAL_TIMEOUT_MS = 60000;

async function submit(page, password) {
  await page.fill("#id_password", password);
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.method() === "POST" && new URL(r.url()).pathname === "/admin/login/"),
    page.click("input[type=submit]"),
  ]);
  const response = await request.response();
  await page.waitForLoadState("load");
  return {
    status: response ? response.status() : null,
    location: response ? response.headers()["location"] || null : null,
    url: page.url(),
  };
}

async function journey(browser, opts) {
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  const landing = await page.goto(opts.base + "/admin/login/?next=/admin/&utm_source=newsletter&utm_medium=email", { waitUntil: "load" });
  await page.fill("#id_username", opts.username);
  const failed = await submit(page, opts.wrong);
  failed.errornote = await page.textContent(".errornote").catch(() => null);
  // Django keeps the username; the password is typed again.
  const accepted = await submit(page, opts.right);
  accepted.heading = await page.textContent("#site-name").catch(() => null);
  const result = {
    landingStatus: landing ? landing.status() : null,
    failed,
    accepted,
    cookies: (await context.cookies()).map((c) => c.name),
    pageErrors,
  };
  await context.close();
  return result;
}

async function main() {
  const opts = JSON.parse(process.argv[2]);
  const browser = await chromium.launch({
    executablePath: process.env.TG_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Nothing may leave 127.0.0.1 (see tests/browser/drive.cjs).
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
    process.stdout.write(JSON.stringify(await journey(browser, opts)) + "\n");
  } finally {
    await browser.close();
  }
}

const watchdog = setTimeout(() => {
  process.stderr.write(`drive_django_login.cjs: no result after ${TOTAL_TIMEOUT_MS} ms\n`);
  process.exit(3);
}, TOTAL_TIMEOUT_MS);

main().then(
  () => clearTimeout(watchdog),
  (e) => {
    process.stderr.write(`drive_django_login.cjs: ${e && e.stack ? e.stack : e}\n`);
    process.exit(2);
  },
);
