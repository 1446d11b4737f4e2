// The dashboard's own cost in a browser (not a CI gate): one tab of headless Debian chromium on
// a daemon whose log gets 2 lines a second, for MINUTES (default 10). Reports the tab's CPU (the
// renderer process's CPU time from the DevTools protocol, and its main thread's task time) and
// its JS heap after a forced GC, minute by minute. Budget (issue 16): at most 2 % of a core, and
// a flat heap (the last minute within 20 % + 1 MiB of the second).
//
//   EDGEMON_BIN=target/release/edgemon node tests/browser/bench.mjs [--minutes N] [--json FILE]
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const MINUTES = Number(arg('--minutes', '10'));
const JSON_OUT = arg('--json', '');
const BIN = process.env.EDGEMON_BIN || 'target/release/edgemon';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const file = path.join(os.tmpdir(), `edgemon-browser-bench-${process.pid}.log`);
fs.writeFileSync(file, '');
const daemon = spawn(BIN, ['--listen', '127.0.0.1:0', '--log', `bench=${file}`], { stdio: ['ignore', 'ignore', 'pipe'] });
const url = await new Promise((resolve, reject) => {
  let buf = '';
  const timer = setTimeout(() => reject(new Error('daemon did not start')), 10000);
  daemon.stderr.on('data', (c) => {
    buf += c;
    const m = buf.match(/listening on (http:\/\/\S+)/);
    if (m) { clearTimeout(timer); resolve(m[1]); }
  });
});
let n = 0;
const writer = setInterval(() => {
  fs.appendFileSync(file, `${new Date().toISOString()} bench[1]: INFO line ${++n} of the benchmark log\n`);
}, 500);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const cdp = await page.context().newCDPSession(page);
const bcdp = await browser.newBrowserCDPSession();
await cdp.send('Performance.enable');
await page.goto(url + '/');
await page.waitForFunction(() => document.getElementById('conn').textContent === 'live', null, { timeout: 10000 });
await page.waitForFunction(() => document.querySelector('#log-source option[value="logs/bench"]'), null, { timeout: 10000 });
await page.selectOption('#log-source', 'logs/bench');

async function reading() {
  const m = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((x) => [x.name, x.value]));
  const info = await bcdp.send('SystemInfo.getProcessInfo');
  const renderer = info.processInfo.filter((p) => p.type === 'renderer').reduce((s, p) => s + p.cpuTime, 0);
  await cdp.send('HeapProfiler.collectGarbage');
  const heap = (await cdp.send('Runtime.getHeapUsage')).usedSize;
  return { t: Date.now() / 1000, task: m.TaskDuration, renderer, heap };
}

// A minute to settle (history, first paints), then the measured minutes.
await new Promise((r) => setTimeout(r, 60000));
const rows = [];
let prev = await reading();
for (let k = 1; k <= MINUTES; k++) {
  await new Promise((r) => setTimeout(r, 60000));
  const cur = await reading();
  const wall = cur.t - prev.t;
  rows.push({
    minute: k,
    renderer_cpu_pct: 100 * (cur.renderer - prev.renderer) / wall,
    main_thread_pct: 100 * (cur.task - prev.task) / wall,
    heap_mib: cur.heap / 1048576,
  });
  console.log(`minute ${k}: renderer ${rows.at(-1).renderer_cpu_pct.toFixed(2)} % · main thread ${rows.at(-1).main_thread_pct.toFixed(2)} % · heap ${rows.at(-1).heap_mib.toFixed(2)} MiB`);
  prev = cur;
}
const lines = await page.evaluate(() => document.getElementById('log').childNodes.length);
clearInterval(writer);
await browser.close();
daemon.kill('SIGTERM');
fs.rmSync(file, { force: true });

const avg = rows.reduce((s, r) => s + r.renderer_cpu_pct, 0) / rows.length;
const first = rows[Math.min(1, rows.length - 1)].heap_mib, last = rows.at(-1).heap_mib;
const flat = last <= first * 1.2 + 1;
const summary = {
  minutes: MINUTES, log_lines_per_s: 2, lines_written: n, lines_in_view: lines,
  renderer_cpu_pct_avg: avg, main_thread_pct_avg: rows.reduce((s, r) => s + r.main_thread_pct, 0) / rows.length,
  heap_mib_second_minute: first, heap_mib_last_minute: last,
  cpu_pass: avg <= 2, heap_flat: flat, rows, chromium: CHROMIUM, host: os.cpus()[0].model,
};
console.log(`tab CPU ${avg.toFixed(2)} % of a core (budget 2 %): ${summary.cpu_pass ? 'PASS' : 'FAIL'}; ` +
  `heap ${first.toFixed(2)} → ${last.toFixed(2)} MiB: ${flat ? 'flat, PASS' : 'grows, FAIL'}`);
if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify(summary, null, 2));
process.exit(summary.cpu_pass && flat ? 0 : 1);
