// The integrity benchmark: scripted visitor journeys in real Chromium
// through touchgate, each measured twice on the very same page loads: by a
// client-only tracker (tracker.js, injected into every page, beacons to a
// collector on its own 127.0.0.1 port) and by touchgate (its event file).
// Prints the results as JSON on stdout; benches/integrity.sh renders them.
//
//   node run.cjs '{"base": "http://127.0.0.1:PORT", "events": "/…/events.jsonl",
//                  "journeys": 200, "seed": 1, "formPath": "/signup"}'
"use strict";
const fs = require("fs");
const http = require("http");
const path = require("path");
const { chromium } = require(path.join(process.env.TG_NODE_MODULES || "node_modules", "playwright-core"));

const STEP_TIMEOUT_MS = 15000;
const MAX_JOURNEYS = 2000;
const CONDITIONS = ["none", "tracker blocker", "strict blocker", "JavaScript off", "unload after submit", "double submit", "7-day JS cookie cap"];
const CHANNELS = [
  // [name, weight, how the visit arrives]
  ["Paid Search", 3, (j, v) => ({ url: `/?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&gclid=bench-${j}-${v}` })],
  ["Email", 2, () => ({ url: "/?utm_source=newsletter&utm_medium=email&utm_campaign=november_digest" })],
  ["Organic Social", 2, () => ({ url: "/pricing?utm_source=facebook&utm_medium=social&utm_campaign=launch_post" })],
  ["Organic Search", 2, () => ({ url: "/pricing", referer: "https://www.google.com/" })],
  ["Direct", 3, () => ({ url: "/" })],
];

// A seeded PRNG (mulberry32): the same seed gives the same journeys.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pickChannel(r) {
  const total = CHANNELS.reduce((s, c) => s + c[1], 0);
  let x = r() * total;
  for (const c of CHANNELS) if ((x -= c[1]) < 0) return c;
  return CHANNELS[CHANNELS.length - 1];
}

// The journeys and their truth: visits on simulated days, the condition,
// whether it ends with a signup, and the channel last-non-direct credits.
function plan(n, seed) {
  const r = rng(seed);
  const out = [];
  for (let j = 0; j < n; j++) {
    const condition = CONDITIONS[j % CONDITIONS.length];
    const visits = [];
    const count = condition === "7-day JS cookie cap" ? 2 + Math.floor(r() * 2) : 1 + Math.floor(r() * 3);
    let day = 0;
    for (let v = 0; v < count; v++) {
      if (v > 0) day += condition === "7-day JS cookie cap" && v === 1 ? 8 + Math.floor(r() * 20) : Math.floor(r() * 10);
      const [channel, , arrive] = pickChannel(r);
      visits.push({ day, channel, ...arrive(j, v) });
    }
    const forced = condition === "unload after submit" || condition === "double submit";
    const converts = forced || r() < 0.7;
    const nonDirect = visits.filter((v) => v.channel !== "Direct");
    const credit = nonDirect.length ? nonDirect[nonDirect.length - 1].channel : "Direct";
    out.push({ id: `j${j}`, condition, visits, converts, credit });
  }
  return out;
}

function collector() {
  const beacons = [];
  const tracker = fs.readFileSync(path.join(__dirname, "tracker.js"), "utf8");
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      if (body.length < 8192) body += c;
    });
    req.on("end", () => {
      if (req.url === "/t.js") {
        res.writeHead(200, { "content-type": "text/javascript", "cache-control": "no-store" });
        return res.end(tracker.replaceAll("__COLLECTOR__", `http://127.0.0.1:${server.address().port}`));
      }
      if (req.url === "/e" && req.method === "POST") {
        try {
          beacons.push(JSON.parse(body));
        } catch (e) {
          beacons.push({ kind: "unreadable" });
        }
      }
      res.writeHead(204, { "access-control-allow-origin": "*" });
      res.end();
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, beacons, port: server.address().port })));
}

async function run(browser, opts, col, j) {
  const js = j.condition !== "JavaScript off";
  // A site's CSP lets its own tracker in; bypassing it stands for that.
  const context = await browser.newContext({ javaScriptEnabled: js, bypassCSP: true });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const collectorOrigin = `http://127.0.0.1:${col.port}`;
  if (j.condition === "tracker blocker" || j.condition === "strict blocker") {
    // As blocklists do: the tracker's host, script and beacons.
    await context.route(`${collectorOrigin}/**`, (r) => r.abort("blockedbyclient"));
  }
  if (j.condition === "strict blocker") {
    await context.route((u) => u.pathname.startsWith("/_tg/"), (r) => r.abort("blockedbyclient"));
  }
  // The baseline is injected into every page, as a tag manager would.
  await context.addInitScript(
    ({ id, src }) => {
      window.__benchJourney = id;
      document.addEventListener("DOMContentLoaded", () => {
        const s = document.createElement("script");
        s.src = src;
        s.async = true;
        document.head.appendChild(s);
      });
    },
    { id: j.id, src: `${collectorOrigin}/t.js` },
  );
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const confirmed = [];
  let device = null;
  let prevDay = 0;
  for (let v = 0; v < j.visits.length; v++) {
    const visit = j.visits[v];
    if (j.condition === "7-day JS cookie cap" && visit.day - prevDay > 7) {
      // Safari's cap: script-set cookies are gone after 7 days; HttpOnly
      // cookies set by the server are not.
      for (const c of await context.cookies()) {
        if (!c.httpOnly) await context.clearCookies({ name: c.name });
      }
    }
    prevDay = visit.day;
    await page.goto(opts.base + visit.url, { waitUntil: "load", referer: visit.referer });
    await settle(page, js);
    // The app echoes the headers touchgate gave it: x-touch-device is the
    // device_id of this journey's events.
    device = device || (await deviceOf(page));
  }
  if (j.converts) {
    await page.goto(opts.base + opts.formPath, { waitUntil: "load" });
    await settle(page, js);
    const submit = async () => {
      await page.fill("input[name=email]", `${j.id}@bench.example`);
      await page.selectOption("select[name=plan]", "pro");
      const [resp] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === opts.formPath),
        page.click("button[type=submit]"),
      ]);
      if (resp.status() < 400) confirmed.push(resp.status());
    };
    await submit();
    if (j.condition === "unload after submit") {
      // The answer has arrived; the tab goes elsewhere before the page runs.
      await page.goto("about:blank");
    } else {
      await page.waitForLoadState("load");
      await settle(page, js);
    }
    if (j.condition === "double submit") {
      await page.goBack({ waitUntil: "load" });
      await submit();
      await page.waitForLoadState("load");
      await settle(page, js);
    }
  }
  await context.close();
  return { confirmed: confirmed.length, device, errors };
}

async function deviceOf(page) {
  const rows = await page.$$eval("#touch tr", (trs) => trs.map((tr) => [tr.querySelector("th")?.textContent, tr.querySelector("td")?.textContent]));
  const row = rows.find((r) => r[0] === "x-touch-device");
  return row ? row[1].trim() : null;
}

// Lets the page's async scripts run and their beacons leave: bounded.
async function settle(page, js) {
  if (!js) return;
  await page.waitForTimeout(150);
}

function readEvents(file) {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

async function main() {
  const opts = JSON.parse(process.argv[2]);
  const n = Math.min(Math.max(1, opts.journeys | 0), MAX_JOURNEYS);
  const journeys = plan(n, opts.seed || 1);
  const col = await collector();
  const browser = await chromium.launch({
    executablePath: process.env.TG_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: STEP_TIMEOUT_MS,
  });
  const results = [];
  try {
    for (const j of journeys) results.push({ ...j, ...(await run(browser, opts, col, j)) });
  } finally {
    await browser.close();
  }
  // The file sink lingers: wait (bounded) until the event count holds.
  let events = readEvents(opts.events);
  for (let i = 0, last = -1; i < 40 && events.length !== last; i++) {
    last = events.length;
    await new Promise((r) => setTimeout(r, 250));
    events = readEvents(opts.events);
  }
  col.server.close();
  process.stdout.write(JSON.stringify({ journeys: results, events, beacons: col.beacons }) + "\n");
}

main().catch((e) => {
  process.stderr.write(`run.cjs: ${e && e.stack ? e.stack : e}\n`);
  process.exit(2);
});
