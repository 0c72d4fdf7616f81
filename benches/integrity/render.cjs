// Tallies run.cjs's output per condition and renders the integrity table
// (Markdown). With --check it fails unless touchgate captured every
// confirmed conversion under every condition and left no duplicate.
//
//   node render.cjs results.json [--check] > table.md
"use strict";
const fs = require("fs");

const CONVERSION = process.env.TG_CONVERSION_EVENT || "signup_submitted";

function tally(data) {
  // touchgate: conversions per device (the tg_did cookie of the journey).
  const tg = new Map();
  for (const e of data.events) {
    if (e.origin !== "proxy" || e.event_name !== CONVERSION || !e.device_id) continue;
    if (!tg.has(e.device_id)) tg.set(e.device_id, []);
    tg.get(e.device_id).push(e.last_touch ? e.last_touch.channel : "Direct");
  }
  // The baseline: conversion beacons per journey id.
  const bl = new Map();
  for (const b of data.beacons) {
    if (b.kind !== "conversion" || !b.journey) continue;
    if (!bl.has(b.journey)) bl.set(b.journey, []);
    bl.get(b.journey).push(b.last);
  }
  const rows = new Map();
  const shares = { truth: new Map(), client: new Map(), touchgate: new Map() };
  const bump = (m, k) => m.set(k, (m.get(k) || 0) + 1);
  for (const j of data.journeys) {
    if (!rows.has(j.condition)) {
      rows.set(j.condition, { journeys: 0, truth: 0, client: 0, touchgate: 0, clientRight: 0, tgRight: 0, clientDup: 0, tgDup: 0, missed: [] });
    }
    const r = rows.get(j.condition);
    r.journeys += 1;
    // One lead per journey: however often the app confirmed it, the truth
    // is one conversion.
    const truth = j.confirmed > 0 ? 1 : 0;
    r.truth += truth;
    const c = bl.get(j.id) || [];
    const t = (j.device && tg.get(j.device)) || [];
    r.client += Math.min(c.length, 1);
    r.touchgate += Math.min(t.length, 1);
    r.clientDup += Math.max(0, c.length - 1);
    r.tgDup += Math.max(0, t.length - 1);
    if (truth) {
      bump(shares.truth, j.credit);
      if (c.length) bump(shares.client, c[c.length - 1]);
      if (t.length) bump(shares.touchgate, t[t.length - 1]);
      if (c.length && c[c.length - 1] === j.credit) r.clientRight += 1;
      if (t.length && t[t.length - 1] === j.credit) r.tgRight += 1;
      if (!t.length) r.missed.push(j.id);
    }
  }
  return { rows, shares };
}

const pct = (n, d) => (d ? `${((100 * n) / d).toFixed(1)} %` : "–");

function render({ rows, shares }) {
  const out = [];
  out.push("| condition | journeys | conversions (truth) | captured: client-only | captured: touchgate | channel right: client-only | channel right: touchgate | duplicates: client-only | duplicates: touchgate |");
  out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  const all = { journeys: 0, truth: 0, client: 0, touchgate: 0, clientRight: 0, tgRight: 0, clientDup: 0, tgDup: 0 };
  for (const [name, r] of rows) {
    for (const k of Object.keys(all)) all[k] += r[k];
    out.push(row(name, r));
  }
  out.push(row("**all**", all));
  out.push("");
  out.push("Channel shares of the conversions (last-non-direct), truth against each path:");
  out.push("");
  out.push("| channel | truth | client-only | touchgate |");
  out.push("|---|---:|---:|---:|");
  const names = new Set([...shares.truth.keys(), ...shares.client.keys(), ...shares.touchgate.keys()]);
  const total = (m) => [...m.values()].reduce((a, b) => a + b, 0);
  for (const n of [...names].sort()) {
    out.push(`| ${n} | ${pct(shares.truth.get(n) || 0, total(shares.truth))} | ${pct(shares.client.get(n) || 0, total(shares.client))} | ${pct(shares.touchgate.get(n) || 0, total(shares.touchgate))} |`);
  }
  return { text: out.join("\n") + "\n", all };
}

function row(name, r) {
  return `| ${name} | ${r.journeys} | ${r.truth} | ${r.client} (${pct(r.client, r.truth)}) | ${r.touchgate} (${pct(r.touchgate, r.truth)}) | ${r.clientRight} (${pct(r.clientRight, r.truth)}) | ${r.tgRight} (${pct(r.tgRight, r.truth)}) | ${r.clientDup} | ${r.tgDup} |`;
}

const data = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const t = tally(data);
const { text, all } = render(t);
process.stdout.write(text);
fs.writeFileSync(process.argv[2] + ".headline", `touchgate ${all.touchgate}/${all.truth}, client-only ${all.client}/${all.truth}, channel right ${all.tgRight} vs ${all.clientRight}`);
if (process.argv.includes("--check")) {
  const bad = [];
  for (const [name, r] of t.rows) {
    if (r.truth === 0) bad.push(`${name}: no confirmed conversion to check`);
    if (r.missed.length) bad.push(`${name}: touchgate missed ${r.missed.join(", ")}`);
    if (r.tgDup) bad.push(`${name}: ${r.tgDup} duplicate(s) after touchgate's dedupe`);
  }
  if (bad.length) {
    process.stderr.write("integrity check failed:\n  " + bad.join("\n  ") + "\n");
    process.exit(1);
  }
  process.stderr.write(`integrity check: touchgate captured all ${all.truth} confirmed conversions, no duplicate\n`);
}
