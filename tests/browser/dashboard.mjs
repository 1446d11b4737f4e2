// Dashboard tests in a real headless Chromium (Debian's), driven by playwright-core.
// Run by tests/browser.rs with EDGEMON_BIN (the daemon) and EDGEMON_ARTIFACTS (screenshots).
// Every wait is bounded; every daemon started here is stopped here.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';

const BIN = process.env.EDGEMON_BIN;
const OUT = process.env.EDGEMON_ARTIFACTS || 'target/browser-artifacts';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(OUT, { recursive: true });

const daemons = new Set();

/** Starts the daemon on 127.0.0.1 (port 0 unless given), with `env` added to ours, and waits
 * for its listening line. */
function startDaemon(args = [], port = 0, env = {}, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['--listen', `${host}:${port}`, ...args],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    const d = { proc, log: [], exited: new Promise((r) => proc.on('exit', r)) };
    daemons.add(d);
    let buf = '';
    const timer = setTimeout(() => reject(new Error('daemon did not start:\n' + d.log.join('\n'))), 10000);
    proc.stderr.on('data', (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        d.log.push(line);
        const m = line.match(/listening on (http:\/\/\S+)/);
        if (m) { clearTimeout(timer); d.url = m[1]; d.port = Number(new URL(m[1]).port); resolve(d); }
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); if (!d.url) reject(new Error(`daemon exited ${code}:\n${d.log.join('\n')}`)); });
  });
}

async function stopDaemon(d) {
  d.proc.kill('SIGTERM');
  const code = await Promise.race([d.exited, new Promise((r) => setTimeout(() => r('timeout'), 8000))]);
  daemons.delete(d);
  if (code === 'timeout') { d.proc.kill('SIGKILL'); throw new Error('daemon did not stop on SIGTERM'); }
}

async function stats(d) {
  return (await fetch(d.url + '/api/websocket/stats')).json();
}

/** Polls `fn` until it returns something truthy; fails after `ms`. */
async function waitFor(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const text = (page, sel) => page.locator(sel).textContent();

/** What a graph says about itself: its accessible label and the test hooks it keeps. */
const graphInfo = (page, id) => page.evaluate((gid) => {
  const c = document.getElementById('g-' + gid);
  return { ...c.dataset, from: Number(c.dataset.from), to: Number(c.dataset.to), label: c.getAttribute('aria-label'), role: c.getAttribute('role') };
}, id);

/** Runs in the page: every visible text's contrast against what is behind it (WCAG 2 formula),
 * listing those under 4.5:1. */
function contrastProblems() {
  const rgb = (s) => { const m = s.match(/[\d.]+/g).map(Number); return { r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1 }; };
  const lum = ({ r, g, b }) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.a > 0.5) return c;
    }
    return rgb(getComputedStyle(document.body).backgroundColor);
  };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el) || !el.getClientRects().length || el.closest('[hidden]')) continue;
    if (el.tagName === 'OPTION') continue;
    seen.add(el);
    const fg = rgb(getComputedStyle(el).color), bg = behind(el);
    const [a, b] = [lum(fg), lum(bg)];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) bad.push(`${el.tagName}#${el.id}.${el.className} "${n.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return bad;
}

/** A page that records console errors, page errors and requests to any other host. */
async function openPage(context, d) {
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push('console: ' + m.text()); });
  page.on('pageerror', (e) => page.problems.push('pageerror: ' + e.message));
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.host !== new URL(d.url).host) page.problems.push('foreign request: ' + r.url());
  });
  await page.goto(d.url + '/');
  return page;
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

const tests = [];
const test = (name, fn, ms = 90000) => tests.push({ name, fn, ms });

test('the page loads without errors, shows the hostname, and CPU values move', async () => {
  const d = await startDaemon();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('hostname', async () => (await text(page, '#host')) === os.hostname());
    // The header says what the board is: kernel, cores and the address the page used.
    const facts = await text(page, '#sysinfo');
    for (const part of [`kernel ${os.release()}`, `${os.cpus().length} core`, `127.0.0.1:${d.port}`]) {
      assert.ok(facts.includes(part), `header facts lack ${part}: ${facts}`);
    }
    await waitFor('load labelled', async () => /\(1 min\).*\(5 min\).*\(15 min\)/.test(await text(page, '#load')));
    await waitFor('the CPU breakdown', async () => /^user \d+\.\d % · system \d+\.\d %/.test(await text(page, '#cpu-modes')));
    // Burn some CPU (bounded) so the figures have something to show.
    const burner = spawn('timeout', ['6', 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' });
    const first = await text(page, '#cores');
    await waitFor('CPU values to change', async () => (await text(page, '#cores')) !== first, 8000);
    burner.kill();
    // The CPU graph has a scale with units, a time axis and a line, and says so in its label.
    await waitFor('a CPU line drawn', () => page.evaluate(() => Number(document.getElementById('g-cpu').dataset.segments) >= 1));
    const cpu = await graphInfo(page, 'cpu');
    assert.equal(cpu.yTicks, '0 %|50 %|100 %');
    assert.match(cpu.xTicks, /^\d\d:\d\d(\|\d\d:\d\d)+$/);
    assert.equal(cpu.to - cpu.from, 600e3, 'the live range spans 10 min');
    assert.match(cpu.label, /^CPU over the last 10 min: total \d+\.\d %; scale 0 % to 100 %$/);
    assert.equal(cpu.role, 'img');
    // The network scale never shrinks to idle chatter: at least 10 KiB/s full scale.
    const net = await graphInfo(page, 'net');
    assert.match(net.yTicks, /^0 B\/s\|.*KiB\/s$|^0 B\/s\|.*MiB\/s$/);
    assert.equal(net.lines, 'received|sent', 'the network graph has a legend of two lines');
    assert.match(await text(page, '#lg-net'), /received .+\/s.*sent .+\/s/);
    assert.equal((await graphInfo(page, 'mem')).yTicks, '0 %|50 %|100 %');
    assert.match(await text(page, '#mem'), /RAM/);
    await waitFor('processes listed', async () => (await page.locator('#procs tbody tr').count()) > 0, 8000);
    assert.equal(await page.getAttribute('th[data-sort="cpu"]', 'aria-sort'), 'descending');
    assert.equal(await page.getAttribute('th[data-sort="rss"]', 'aria-sort'), 'none');
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
});

test('hovering one graph shows the same time and values on all of them', async () => {
  const d = await startDaemon();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await openPage(context, d);
    await waitFor('a CPU line drawn', () => page.evaluate(() => Number(document.getElementById('g-cpu').dataset.segments) >= 1));
    await waitFor('some seconds of data', () => page.evaluate(() => store('10m').ts.length >= 5), 15000);
    const box = await page.locator('#g-cpu').boundingBox();
    // Over the point before the newest one (the page's plot starts 52 px in and ends 6 px short).
    const x = await page.evaluate(() => {
      const c = document.getElementById('g-cpu'), from = Number(c.dataset.from), to = Number(c.dataset.to);
      const ts = store('10m').ts;
      return 52 + (ts[ts.length - 2] - from) / (to - from) * (c.clientWidth - 58);
    });
    await page.mouse.move(box.x + x, box.y + box.height / 2);
    await waitFor('a time in every legend', async () => {
      const whens = await page.locator('.legend .when').allTextContents();
      return whens.length >= 3 && whens.every((w) => w === whens[0]) && /^\d\d:\d\d:\d\d$/.test(whens[0]);
    }, 3000);
    const hovered = await text(page, '#lg-cpu');
    assert.match(hovered, /total \d+\.\d %/, `the hovered CPU value: ${hovered}`);
    assert.match(await text(page, '#lg-mem'), /RAM \d+\.\d %/, 'the hovered memory value');
    await page.mouse.move(box.x + box.width / 2, box.y - 40);
    await waitFor('the crosshair gone', async () => (await page.locator('.legend .when').count()) === 0, 3000);
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
});

test('the range picker draws a synthetic week: 24 h with its gap, band and events, remembered', async () => {
  const d = await startDaemon(['--state-dir', process.env.EDGEMON_DEMO_STATE]);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    assert.ok(d.log.some((l) => l.includes('history: restored')), 'the demo snapshot was restored:\n' + d.log.join('\n'));
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await page.click('#ranges button[data-range="24h"]');
    await waitFor('the day drawn', () => page.evaluate(() => store('24h').ts.length > 1000), 10000);
    await page.waitForTimeout(200);
    const cpu = await graphInfo(page, 'cpu');
    assert.equal(cpu.to - cpu.from, 86400e3, 'the axis spans 24 h');
    assert.match(cpu.label, /^CPU over the last 24 h: total \d+\.\d %/);
    assert.ok(cpu.xTicks.split('|').length >= 5, `time ticks every 4 h: ${cpu.xTicks}`);
    // The two hours the daemon was off are a gap, not a line across: two runs at least.
    assert.ok(Number(cpu.segments) >= 2, `gap drawn as a gap (segments ${cpu.segments})`);
    assert.ok(Number(cpu.events) >= 4, `event markers (${cpu.events})`);
    assert.equal(await page.getAttribute('#ranges button[data-range="24h"]', 'aria-pressed'), 'true');
    await waitFor('the events list', async () => /under-voltage detected/.test(await text(page, '#events')));
    // A marker's text on hover: under-voltage was 3 h ago.
    const box = await page.locator('#g-cpu').boundingBox();
    const x = await page.evaluate(() => {
      const c = document.getElementById('g-cpu'), from = Number(c.dataset.from), to = Number(c.dataset.to);
      const e = S.events.find((v) => v.kind === 'under_voltage' && v.state === 'on');
      return 52 + (e.ts - from) / (to - from) * (c.clientWidth - 58);
    });
    await page.mouse.move(box.x + x, box.y + 20);
    await waitFor('the marker text', async () => /under-voltage detected/.test(await text(page, '#lg-cpu')), 3000);
    await page.screenshot({ path: path.join(OUT, 'dashboard-24h.png'), fullPage: true });
    // The band: the downsampled range keeps min and max apart from the mean.
    assert.ok(await page.evaluate(() => {
      const v = store('24h').s.get('cpu.total');
      return v.max.some((m, i) => m !== null && m > v.mean[i]);
    }), 'min–max band data');
    // 7 d, then a reload: the choice is remembered by this browser.
    await page.click('#ranges button[data-range="7d"]');
    await waitFor('the week drawn', () => page.evaluate(() => store('7d').ts.length > 1500), 10000);
    // One reading: a frame drawn between two would move `to` on by its milliseconds.
    const week = await graphInfo(page, 'cpu');
    assert.equal(week.to - week.from, 7 * 86400e3, 'the axis spans 7 d');
    await page.reload();
    await waitFor('7 d after a reload', async () => (await page.getAttribute('#ranges button[data-range="7d"]', 'aria-pressed')) === 'true');
    await waitFor('the week drawn again', () => page.evaluate(() => store('7d').ts.length > 1500), 10000);
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
});

test('text contrast is WCAG AA in both themes; screenshots at 375, 1280 and 1920 px', async () => {
  const file = path.join(os.tmpdir(), `edgemon-browser-shots-${process.pid}.log`);
  fs.writeFileSync(file, 'Dec  2 10:00:01 pi systemd[1]: Started edgemon.\nDec  2 10:00:02 pi kernel: usb 1-1: new device\n');
  // Two alerts that fire on any host, so the banner and the alerts card are checked too.
  const d = await startDaemon(['--log', `demo=${file}`, '--alert', 'busy: cpu >= 0 warning', '--alert', 'roomy: memory_available_pct <= 100 critical']);
  try {
    for (const scheme of ['light', 'dark']) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: scheme });
      try {
        const page = await openPage(context, d);
        await waitFor('live', async () => (await text(page, '#conn')) === 'live');
        await waitFor('processes listed', async () => (await page.locator('#procs tbody tr').count()) > 0, 8000);
        await waitFor('source listed', async () => (await page.locator('#log-source option[value="logs/demo"]').count()) === 1);
        await page.selectOption('#log-source', 'logs/demo');
        await waitFor('the log', async () => (await text(page, '#log')).includes('Started edgemon'));
        await waitFor('the alert banner', () => page.locator('#alert-banner').isVisible());
        const bad = await page.evaluate(contrastProblems);
        assert.deepEqual(bad, [], `${scheme}: text under 4.5:1`);
        for (const width of [375, 1280, 1920]) {
          await page.setViewportSize({ width, height: width === 375 ? 812 : 1000 });
          await page.waitForTimeout(300); // let the layout and one frame settle before the picture
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          assert.ok(overflow <= 0, `page is ${overflow}px wider than ${width}px`);
          if (width === 375) {
            const small = await page.evaluate(() => [...document.querySelectorAll('button, select, input, th.sort')]
              .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().height < 44)
              .map((e) => `${e.id || e.textContent} ${Math.round(e.getBoundingClientRect().height)}px`));
            assert.deepEqual(small, [], 'touch targets under 44 px on a phone');
            // The header's words and arrow fit inside its padding.
            const cut = await page.evaluate(() => [...document.querySelectorAll('th.sort')].filter((e) => {
              const r = document.createRange(); r.selectNodeContents(e);
              const cs = getComputedStyle(e);
              return r.getBoundingClientRect().width > e.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) + 0.5;
            }).map((e) => e.textContent));
            assert.deepEqual(cut, [], 'sort headers truncated');
          }
          await page.screenshot({ path: path.join(OUT, `dashboard-${width}-${scheme}.png`), fullPage: true });
        }
        assert.deepEqual(page.problems, []);
      } finally {
        await context.close();
      }
    }
  } finally {
    await stopDaemon(d);
    fs.rmSync(file, { force: true });
  }
});

test('a firing alert shows in a banner, the alerts card, the tab title and the events', async () => {
  const d = await startDaemon(['--alert', 'always: cpu >= 0 critical', '--alert', 'later: cpu >= 0 for 1h info']);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('the banner', () => page.locator('#alert-banner').isVisible());
    const banner = await text(page, '#alert-banner');
    assert.match(banner, /critical always firing since \S+ \S+: [\d.]+ \(cpu >= 0 critical\)/, banner);
    assert.equal(await page.getAttribute('#alert-banner', 'role'), 'alert', 'announced to screen readers');
    assert.equal(await page.getAttribute('#alert-banner', 'class'), 'critical');
    assert.ok(!banner.includes('later'), 'a pending alert is not in the banner');
    // The card lists every rule with its state: the defaults too (unavailable without a Pi).
    const items = await page.locator('#alerts li').allTextContents();
    assert.ok(items.some((t) => t.startsWith('always') && t.includes('firing')), items.join(' / '));
    assert.ok(items.some((t) => t.startsWith('later') && t.includes('pending')), items.join(' / '));
    assert.ok(items.some((t) => t.startsWith('under_voltage') && t.includes('unavailable') && t.includes('no Raspberry Pi')), items.join(' / '));
    assert.match(await text(page, '#alerts-sum'), /1 firing · 1 pending/);
    assert.match(await page.title(), /^\(1\) /);
    // The firing became an event: listed in the events card (and marked on the graphs).
    await waitFor('the alert event', async () => (await text(page, '#events')).includes('alert always (critical) firing'));
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
});

test('services and disk I/O show when there is something to show; no systemd, no services card', async () => {
  // The fake systemctl of tests/services.rs, answering from a directory of ours.
  const fakeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgemon-browser-systemd-'));
  fs.writeFileSync(path.join(fakeDir, 'failed.json'),
    '[{"unit":"backup.service","load":"loaded","active":"failed","sub":"failed","description":"Nightly backup"}]\n');
  fs.writeFileSync(path.join(fakeDir, 'show.txt'), 'Id=ssh.service\nDescription=OpenBSD Secure Shell server\nLoadState=loaded\n'
    + 'ActiveState=active\nSubState=running\nNRestarts=3\nStateChangeTimestamp=@1764770000\n');
  fs.writeFileSync(path.join(fakeDir, 'count'), '1');
  const fake = new URL('../fixtures/fake-systemctl', import.meta.url).pathname;
  const env = { PATH: `${fake}:${process.env.PATH}`, FAKE_SYSTEMD_DIR: fakeDir };
  const d = await startDaemon(['--unit', 'ssh', '--hub-linger', '0'], 0, env);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('the services card', () => page.locator('#card-services').isVisible());
    const items = await page.locator('#services li').allTextContents();
    assert.ok(items[0].startsWith('backup.service') && items[0].includes('failed (failed)'), items.join(' / '));
    assert.ok(items[1].startsWith('ssh.service') && items[1].includes('active (running)') && items[1].includes('3 restarts'), items.join(' / '));
    assert.equal(await text(page, '#services-sum'), '1 failed');
    // This host's disks: I/O per device with what was written since boot.
    await waitFor('disk I/O rows', async () => /^\w+W .+\/s R .+\/s · .+ written$/.test(await text(page, '#disk-io')));
    await page.screenshot({ path: path.join(OUT, 'services-1280.png'), fullPage: true });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
  // systemd down: the card stays hidden and the page stops listening to the topic.
  fs.writeFileSync(path.join(fakeDir, 'down'), '');
  const d2 = await startDaemon(['--hub-linger', '0'], 0, env);
  const context2 = await browser.newContext();
  try {
    const page = await openPage(context2, d2);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('the services topic left', async () => {
      const s = await stats(d2);
      return s.hubs.some((h) => h.topic === 'system') && !s.hubs.some((h) => h.topic === 'services');
    });
    assert.equal(await page.locator('#card-services').isVisible(), false);
    assert.deepEqual(page.problems, []);
  } finally {
    await context2.close();
    await stopDaemon(d2);
    fs.rmSync(fakeDir, { recursive: true, force: true });
  }
});

/** A container engine on a Unix socket answering the few calls edgemon makes, from fixed
 * containers: `web` (running, healthy, logging) and `backup` (exited). Stats counters grow with
 * each call, so rates show. The real engine is tested in tests/containers.rs. */
async function fakeEngine(dir) {
  const http = await import('node:http');
  const sock = path.join(dir, 'engine.sock');
  let calls = 0;
  const web = { Id: 'a1b2c3d4e5f60718293a4b5c', Names: ['/web'], Image: 'nginx:1.27', State: 'running', Status: 'Up 3 hours (healthy)' };
  const backup = { Id: 'ffeeddccbbaa998877665544', Names: ['/backup'], Image: 'restic/restic', State: 'exited', Status: 'Exited (0) 2 hours ago' };
  // Lines keep the stamps they were logged with, and `since` (unix seconds) picks from them.
  const logged = [['GET / 200', Date.now() - 60e3], ['GET /health 200', Date.now() - 30e3]];
  const frame = ([line, at]) => {
    const b = Buffer.from(`${new Date(at).toISOString()} ${line}\n`);
    const h = Buffer.alloc(8); h[0] = 1; h.writeUInt32BE(b.length, 4);
    return Buffer.concat([h, b]);
  };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://engine');
    const json = (v) => { res.writeHead(200, { 'Content-Type': 'application/json' }); res.end(JSON.stringify(v)); };
    if (u.pathname === '/containers/json') return json([web, backup]);
    const m = u.pathname.match(/^\/containers\/([^/]+)\/(json|stats|logs)$/);
    const c = m && [web, backup].find((x) => x.Id.startsWith(m[1]) || x.Names[0] === '/' + m[1]);
    if (!c) { res.writeHead(404, { 'Content-Type': 'application/json' }); return res.end('{"message":"no such container"}'); }
    if (m[2] === 'json') {
      return json({ Id: c.Id, Name: c.Names[0], RestartCount: c === web ? 2 : 0, Config: { Tty: false },
        State: { Running: c.State === 'running', StartedAt: new Date(Date.now() - 3 * 3600e3).toISOString(), Health: c === web ? { Status: 'healthy' } : undefined } });
    }
    if (m[2] === 'stats') {
      calls++;
      return json({ read: new Date().toISOString(), cpu_stats: { cpu_usage: { total_usage: calls * 250e6 } },
        memory_stats: { usage: 64 << 20, limit: 512 << 20 }, pids_stats: { current: 5 },
        networks: { eth0: { rx_bytes: calls * 40960, tx_bytes: calls * 8192 } },
        blkio_stats: { io_service_bytes_recursive: [{ op: 'write', value: calls * 4096 }] } });
    }
    res.writeHead(200, { 'Content-Type': 'application/vnd.docker.multiplexed-stream' });
    const since = Number(u.searchParams.get('since') || 0) * 1000;
    res.write(Buffer.concat(logged.filter(([, at]) => at >= since).map(frame)));
    if (u.searchParams.get('follow') !== '1') return res.end();
    const t = setInterval(() => {
      const l = ['GET /live 200', Date.now()];
      logged.push(l);
      res.write(frame(l));
    }, 500);
    res.on('close', () => clearInterval(t));
  });
  await new Promise((r) => server.listen(sock, r));
  return { sock, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

test('containers show in their card with figures, and a container links to its log', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgemon-browser-engine-'));
  const engine = await fakeEngine(dir);
  const d = await startDaemon(['--docker-socket', engine.sock, '--container-logs', 'web', '--hub-linger', '0']);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('the containers card', () => page.locator('#card-containers').isVisible());
    assert.equal(await text(page, '#containers-sum'), '1 running of 2');
    // Rates need a second reading.
    await waitFor('the figures of web', async () => /CPU [\d.]+ %/.test(await text(page, '#containers li:first-child')));
    const items = await page.locator('#containers li').allTextContents();
    assert.ok(items[0].startsWith('web') && items[0].includes('running (healthy)'), items.join(' / '));
    assert.ok(items[0].includes('nginx:1.27') && items[0].includes('64.0 MiB of 512.0 MiB') && items[0].includes('2 restarts'), items[0]);
    assert.ok(/net [\d.]+ KiB\/s in, [\d.]+ KiB\/s out/.test(items[0]) && items[0].includes('up 3h'), items[0]);
    assert.ok(items[1].startsWith('backup') && items[1].includes('Exited (0) 2 hours ago') && !items[1].includes('log'), items[1]);
    await page.getByRole('button', { name: 'log of web' }).click();
    assert.equal(await page.locator('#log-source').inputValue(), 'logs/container/web');
    await waitFor('the container log lines', async () => (await text(page, '#log')).includes('GET /live 200'));
    const log = await text(page, '#log');
    assert.equal(log.split('GET /health 200').length, 2, `the backlog once, not again from the follow: ${log}`);
    await page.screenshot({ path: path.join(OUT, 'containers-1280.png'), fullPage: true });
    // On a phone the log link is a finger's size too.
    await page.setViewportSize({ width: 375, height: 812 });
    await page.waitForTimeout(300);
    const h = await page.getByRole('button', { name: 'log of web' }).evaluate((e) => e.getBoundingClientRect().height);
    assert.ok(h >= 44, `log link ${h}px tall on a phone`);
    await page.screenshot({ path: path.join(OUT, 'containers-375.png'), fullPage: true });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
    await engine.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // No engine: no card, and the page stops listening to the topic.
  const d2 = await startDaemon(['--hub-linger', '0']);
  const context2 = await browser.newContext();
  try {
    const page = await openPage(context2, d2);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('the containers topic left', async () => {
      const s = await stats(d2);
      return s.hubs.some((h) => h.topic === 'system') && !s.hubs.some((h) => h.topic === 'containers');
    });
    assert.equal(await page.locator('#card-containers').isVisible(), false);
    assert.deepEqual(page.problems, []);
  } finally {
    await context2.close();
    await stopDaemon(d2);
  }
});

/** A TCP port free on `host` now (bound and released). */
async function freePort(host) {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, host, () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

test('the fleet view lists 4 boards, links to each, and shows one going offline', async () => {
  // Four boards on 127.0.0.2-5, one port for all, each the others' peer; pings every second.
  const port = await freePort('127.0.0.2');
  const ips = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];
  const addrs = ips.map((ip) => `${ip}:${port}`);
  const boards = [];
  for (const [i, ip] of ips.entries()) {
    const peers = addrs.filter((_, j) => j !== i).flatMap((a) => ['--peer', a]);
    boards.push(await startDaemon(['--ping-interval', '1s', '--pong-timeout', '1s', '--hub-linger', '0', ...peers], port, {}, ip));
  }
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await openPage(context, boards[0]);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    assert.equal(await page.locator('#card-fleet').isVisible(), false, 'the fleet view is closed at first');
    assert.ok(!(await stats(boards[0])).hubs.some((h) => h.topic === 'fleet'), 'no fleet subscription while closed');
    await page.locator('#fleet-toggle').click();
    await waitFor('4 boards online', async () => (await text(page, '#fleet-sum')) === '4 of 4 online', 15000);
    const rows = await page.locator('#fleet tbody tr').allTextContents();
    assert.equal(rows.length, 4);
    assert.ok(rows[0].includes('(this one)') && rows[0].includes('online'), rows[0]);
    for (const [k, a] of addrs.slice(1).entries()) {
      assert.equal(await page.locator('#fleet tbody tr').nth(k + 1).locator('a').getAttribute('href'), `http://${a}/`);
      assert.ok(/\d+\.\d %/.test(rows[k + 1]), rows[k + 1]);
    }
    // One board stops answering: offline within ping + pong, with when it was last seen.
    boards[3].proc.kill('SIGSTOP');
    await waitFor('one board offline', async () => (await text(page, '#fleet-sum')) === '3 of 4 online', 6000);
    const gone = await page.locator('#fleet tbody tr').nth(3).textContent();
    assert.ok(gone.includes('offline') && gone.includes('last seen'), gone);
    // Its last figures stay, dimmed as stale; the boards still online are not.
    assert.ok(/\d+\.\d %/.test(gone), gone);
    const stale = await page.locator('#fleet tbody tr').evaluateAll((trs) => trs.map((tr) => tr.className === 'stale'));
    assert.deepEqual(stale, [false, false, false, true]);
    const dim = await page.locator('#fleet tbody tr').nth(3).locator('td').nth(2).evaluate((td) => getComputedStyle(td).opacity);
    assert.equal(dim, '0.55');
    await page.screenshot({ path: path.join(OUT, 'fleet-1280.png'), fullPage: true });
    await page.setViewportSize({ width: 375, height: 812 });
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than a phone`);
    await page.screenshot({ path: path.join(OUT, 'fleet-375.png'), fullPage: true });
    // Closed again: the page stops asking, and the board stops calling the others.
    await page.locator('#fleet-toggle').click();
    await waitFor('the fleet topic left', async () => !(await stats(boards[0])).hubs.some((h) => h.topic === 'fleet'));
    assert.deepEqual(page.problems, []);
    await waitFor('the fleet view closed', async () => !(await page.locator('#card-fleet').isVisible()), 2000);
  } finally {
    await context.close();
    boards[3].proc.kill('SIGCONT');
    for (const d of boards) await stopDaemon(d);
  }
});

test('20 rapid reloads of one tab leave exactly one connection', async () => {
  const d = await startDaemon();
  const context = await browser.newContext();
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    // Navigating to the same URL is a reload; page.reload() in a tight loop detaches Playwright.
    // Each reload gets as far as opening its socket, so 21 sockets really are opened in all.
    for (let i = 0; i < 20; i++) {
      await page.goto(d.url + '/', { waitUntil: 'commit' });
      await waitFor(`reload ${i} live`, async () => (await text(page, '#conn')) === 'live', 5000);
    }
    await waitFor('live after reloads', async () => (await text(page, '#conn')) === 'live');
    await waitFor('one connection', async () => (await stats(d)).active_connections === 1, 10000);
    // And it stays one: nothing stacked up behind it.
    await page.waitForTimeout(1500);
    assert.equal((await stats(d)).active_connections, 1);
    assert.equal((await stats(d)).connections_total >= 21, true);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
});

test('a sixth tab shows the per-device limit, and connects when one closes', async () => {
  const d = await startDaemon(['--max-per-ip', '5']);
  const context = await browser.newContext();
  try {
    const pages = [];
    for (let i = 0; i < 5; i++) {
      const p = await openPage(context, d);
      await waitFor(`tab ${i} live`, async () => (await text(p, '#conn')) === 'live');
      pages.push(p);
    }
    const sixth = await openPage(context, d);
    await waitFor('the limit message', async () =>
      (await text(sixth, '#notice')).includes('too many open dashboards from this device (limit 5)'));
    assert.equal(await text(sixth, '#conn'), 'limit reached');
    await pages[0].close();
    await waitFor('the sixth tab connects', async () => (await text(sixth, '#conn')) === 'live', 20000);
    assert.equal(await sixth.locator('#notice').isHidden(), true);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
});

test('stopping the daemon shows reconnecting; a restart resumes live data without a reload', async () => {
  let d = await startDaemon();
  const port = d.port;
  const context = await browser.newContext();
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await page.evaluate(() => { window.__marker = 'same page'; });
    // Let the first daemon number a few samples: the new one starts again at 1, and the page must
    // not take its frames for old ones.
    await waitFor('some samples', () => page.evaluate(() => S.lastSeq >= 4), 10000);
    const before = await page.evaluate(() => store('10m').s.get('cpu.total').mean.filter((v) => v !== null).length);
    await stopDaemon(d);
    await waitFor('reconnecting', async () => (await text(page, '#conn')).startsWith('reconnecting'));
    // While not live, what is shown is dimmed with its age, and "Retry now" is offered.
    await waitFor('dimmed', () => page.evaluate(() => document.querySelector('main').classList.contains('stale')), 5000);
    assert.match(await page.evaluate(() => getComputedStyle(document.querySelector('#card-cpu h2'), '::after').content), /old/);
    assert.equal(await page.locator('#retry').isVisible(), true);
    // Let the backoff grow past a few seconds, so "Retry now" is what brings it back.
    await page.waitForTimeout(4000);
    d = await startDaemon([], port);
    const t0 = Date.now();
    await page.click('#retry');
    await waitFor('live again', async () => (await text(page, '#conn')) === 'live', 3000);
    console.log(`    live ${Date.now() - t0} ms after "Retry now"`);
    assert.equal(await page.evaluate(() => window.__marker), 'same page', 'the page was reloaded');
    await waitFor('fresh data', async () => /^data [01] s old$/.test(await text(page, '#age')), 5000);
    await waitFor('not dimmed', () => page.evaluate(() => !document.querySelector('main').classList.contains('stale')), 3000);
    // The new daemon has no history (no snapshot here): the page keeps what it drew.
    const after = await page.evaluate(() => store('10m').s.get('cpu.total').mean.filter((v) => v !== null).length);
    assert.ok(after >= before, `the graph lost points across the restart (${before} → ${after})`);
  } finally {
    await context.close();
    await stopDaemon(d);
  }
});

test('a line appended to a log file shows in the log viewer within 2 s', async () => {
  const file = path.join(os.tmpdir(), `edgemon-browser-${process.pid}.log`);
  fs.writeFileSync(file, 'first line\n');
  const d = await startDaemon(['--log', `demo=${file}`, '--history', '120']);
  const context = await browser.newContext();
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('the source listed', async () => (await page.locator('#log-source option[value="logs/demo"]').count()) === 1);
    await page.selectOption('#log-source', 'logs/demo');
    await waitFor('the backlog', async () => (await text(page, '#log')).includes('first line'));
    const line = `appended ${Date.now()}`;
    fs.appendFileSync(file, line + '\n');
    const t0 = Date.now();
    await waitFor('the new line', async () => (await text(page, '#log')).includes(line), 2000);
    console.log(`    line visible after ${Date.now() - t0} ms`);
    // Paused: lines keep arriving, shown on resume.
    await page.click('#log-follow');
    fs.appendFileSync(file, 'while paused\n');
    await waitFor('pending count', async () => /1 new line/.test(await text(page, '#log-status')), 3000);
    assert.equal((await text(page, '#log')).includes('while paused'), false);
    // Paused, the filter and Clear still act on what is shown.
    await page.fill('#log-filter', 'appended');
    await waitFor('filtered while paused', async () => !(await text(page, '#log')).includes('first line'));
    assert.ok((await text(page, '#log')).includes(line));
    await page.fill('#log-filter', '');
    await waitFor('unfiltered while paused', async () => (await text(page, '#log')).includes('first line'));
    assert.equal((await text(page, '#log')).includes('while paused'), false);
    await page.click('#log-follow');
    await waitFor('shown on resume', async () => (await text(page, '#log')).includes('while paused'));
    await page.fill('#log-filter', 'first');
    await waitFor('filtered', async () => !(await text(page, '#log')).includes('while paused'));
    await page.fill('#log-filter', '');
    await waitFor('unfiltered', async () => (await text(page, '#log')).includes('while paused'));
    // Following, a text selection survives new lines (they are appended, not the view rebuilt).
    await page.evaluate(() => {
      const r = document.createRange(); r.selectNodeContents(document.getElementById('log').firstChild);
      getSelection().removeAllRanges(); getSelection().addRange(r);
    });
    fs.appendFileSync(file, 'ERROR: disk on fire\nwarning: smoke\n');
    await waitFor('the error line', async () => (await text(page, '#log')).includes('smoke'));
    // (A line is a block, so the selected text has no trailing newline.)
    assert.equal((await page.evaluate(() => getSelection().toString())).trim(), 'first line', 'the selection was lost');
    // Levels coloured where a line says one.
    assert.equal(await page.evaluate(() => [...document.querySelectorAll('#log span')].find((s) => s.textContent.startsWith('ERROR')).className), 'lv-err');
    assert.equal(await page.evaluate(() => [...document.querySelectorAll('#log span')].find((s) => s.textContent.startsWith('warning')).className), 'lv-warn');
    // Clear empties the view; lines after it still come.
    await page.click('#log-clear');
    await waitFor('cleared', async () => (await text(page, '#log')) === '');
    fs.appendFileSync(file, 'after clear\n');
    await waitFor('a line after clear', async () => (await text(page, '#log')) === 'after clear\n');
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
    fs.rmSync(file, { force: true });
  }
});

test('numbered log lines show exactly once across a 70 s hidden tab and a daemon restart', async () => {
  const file = path.join(os.tmpdir(), `edgemon-browser-resume-${process.pid}.log`);
  let n = 0;
  const write = (k) => { let t = ''; for (let i = 0; i < k; i++) t += `n${++n}\n`; fs.appendFileSync(file, t); };
  fs.writeFileSync(file, '');
  write(20);
  let d = await startDaemon(['--log', `demo=${file}`]);
  const port = d.port;
  const context = await browser.newContext();
  const numbers = async (page) => (await text(page, '#log')).split('\n').filter((l) => l);
  const expectAll = async (page, what) => {
    await waitFor(what, async () => (await numbers(page)).length >= n, 10000);
    const got = await numbers(page);
    const want = Array.from({ length: n }, (_, i) => `n${i + 1}`);
    assert.deepEqual(got, want, `${what}: every line once, in order`);
  };
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('source listed', async () => (await page.locator('#log-source option[value="logs/demo"]').count()) === 1);
    await page.selectOption('#log-source', 'logs/demo');
    await expectAll(page, 'the first lines');
    const setVisibility = (state) => page.evaluate((s) => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => s });
      document.dispatchEvent(new Event('visibilitychange'));
    }, state);
    // Hidden for 70 s (longer than the hub linger, so the hub stops and its numbering starts
    // again) while the log grows by 2 lines a second: 140 lines, more than the 100 a new hub keeps.
    await setVisibility('hidden');
    const t0 = Date.now();
    while (Date.now() - t0 < 70000) { write(1); await new Promise((r) => setTimeout(r, 500)); }
    assert.equal((await stats(d)).hubs.some((h) => h.topic === 'logs/demo'), false, 'the log hub outlived the hidden tab');
    await setVisibility('visible');
    await expectAll(page, 'after 70 s hidden');
    // The daemon restarts while lines keep coming.
    await stopDaemon(d);
    write(30);
    d = await startDaemon(['--log', `demo=${file}`], port);
    await waitFor('retry offered', () => page.locator('#retry').isVisible(), 5000);
    await page.click('#retry');
    await waitFor('live again', async () => (await text(page, '#conn')) === 'live', 5000);
    write(5);
    await expectAll(page, 'after a daemon restart');
    assert.equal((await text(page, '#log')).includes('missed'), false);
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await stopDaemon(d);
    fs.rmSync(file, { force: true });
  }
}, 150000);

test('a hidden tab unsubscribes from processes and logs, and resubscribes when visible', async () => {
  const file = path.join(os.tmpdir(), `edgemon-browser-vis-${process.pid}.log`);
  fs.writeFileSync(file, 'x\n');
  const d = await startDaemon(['--log', `demo=${file}`, '--hub-linger', '0']);
  const context = await browser.newContext();
  const subs = async (topic) => {
    const h = (await stats(d)).hubs.find((x) => x.topic === topic);
    return h ? h.subscribers : 0;
  };
  try {
    const page = await openPage(context, d);
    await waitFor('live', async () => (await text(page, '#conn')) === 'live');
    await waitFor('source listed', async () => (await page.locator('#log-source option[value="logs/demo"]').count()) === 1);
    await page.selectOption('#log-source', 'logs/demo');
    await waitFor('subscribed', async () => (await subs('processes')) === 1 && (await subs('logs/demo')) === 1);
    const setVisibility = (state) => page.evaluate((s) => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => s });
      document.dispatchEvent(new Event('visibilitychange'));
    }, state);
    await setVisibility('hidden');
    await waitFor('unsubscribed while hidden', async () =>
      (await subs('processes')) === 0 && (await subs('logs/demo')) === 0 && (await subs('system')) === 1);
    await setVisibility('visible');
    await waitFor('resubscribed', async () => (await subs('processes')) === 1 && (await subs('logs/demo')) === 1);
    // The resubscribe's backlog overlaps what the page has: no line twice.
    await page.waitForTimeout(500);
    assert.equal((await text(page, '#log')).split('\n').filter((l) => l === 'x').length, 1);
  } finally {
    await context.close();
    await stopDaemon(d);
    fs.rmSync(file, { force: true });
  }
});

test('a page on another origin cannot open a WebSocket unless allowed', async () => {
  const http = await import('node:http');
  let daemonUrl = '';
  const other = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><script>
      const ws = new WebSocket(${JSON.stringify(daemonUrl.replace('http', 'ws') + '/ws')});
      window.result = 'pending';
      ws.onopen = () => { window.result = 'open'; };
      ws.onclose = () => { if (window.result === 'pending') window.result = 'refused'; };
    </script>`);
  });
  await new Promise((r) => other.listen(0, '127.0.0.1', r));
  const otherOrigin = `http://127.0.0.1:${other.address().port}`;
  const context = await browser.newContext();
  try {
    for (const [args, expected] of [[[], 'refused'], [['--allow-origin', otherOrigin], 'open']]) {
      const d = await startDaemon(args);
      daemonUrl = d.url;
      try {
        const page = await context.newPage();
        await page.goto(otherOrigin + '/');
        await waitFor(`the cross-origin socket (${expected})`, () =>
          page.evaluate(() => window.result !== 'pending' && window.result));
        assert.equal(await page.evaluate(() => window.result), expected);
        if (expected === 'refused') {
          assert.equal((await stats(d)).active_connections, 0);
          assert.ok(d.log.some((l) => l.includes('refused origin ' + otherOrigin)), d.log.join('\n'));
        }
        await page.close();
      } finally {
        await stopDaemon(d);
      }
    }
  } finally {
    await context.close();
    other.close();
  }
});

test('with a token, /?token= logs the browser in and the dashboard goes live', async () => {
  const http = await import('node:http');
  const token = 'browser+token/0123456789abcdef=';
  const file = path.join(os.tmpdir(), `edgemon-browser-token-${process.pid}`);
  fs.writeFileSync(file, token + '\n', { mode: 0o600 });
  const d = await startDaemon(['--token-file', file]);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const first = await page.goto(d.url + '/');
    assert.equal(first.status(), 401);
    // A browser without the token sees how to log in, not a JSON error.
    assert.match(first.headers()['content-type'], /^text\/html/);
    assert.match(await page.textContent('body'), /\/\?token=/);
    // Percent-encoded, as a link or a form would send it.
    await page.goto(`${d.url}/?token=${encodeURIComponent(token)}`);
    assert.equal(new URL(page.url()).search, '', 'the token stays in the address bar');
    await waitFor('live with the cookie', async () => (await text(page, '#conn')) === 'live');
    const cookies = await context.cookies();
    assert.ok(cookies.some((c) => c.name === 'edgemon_token' && c.httpOnly && c.sameSite === 'Lax'));

    // A link from a page on another site (localhost is another site than 127.0.0.1) reaches
    // the dashboard: a Lax cookie goes with a top-level navigation, a Strict one would not.
    const other = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><a id="go" href="${d.url}/">the board</a>`);
    });
    await new Promise((r) => other.listen(0, '127.0.0.1', r));
    try {
      const start = await context.newPage();
      await start.goto(`http://localhost:${other.address().port}/`);
      const [landed] = await Promise.all([start.waitForNavigation(), start.click('#go')]);
      assert.equal(landed.status(), 200, 'the link reached the dashboard with the cookie');
      await waitFor('live after the link', async () => (await text(start, '#conn')) === 'live');
    } finally {
      other.close();
    }
  } finally {
    await context.close();
    await stopDaemon(d);
    fs.rmSync(file, { force: true });
  }
});

let failed = 0;
// ONLY=substring runs the tests whose name has it (for working on one).
const chosen = tests.filter((t) => !process.env.ONLY || t.name.includes(process.env.ONLY));
for (const t of chosen) {
  const t0 = Date.now();
  try {
    await Promise.race([t.fn(), new Promise((_, rej) => setTimeout(() => rej(new Error(`test timed out after ${t.ms / 1000} s`)), t.ms))]);
    console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${t.name}\n     ${String(e && e.stack || e).replace(/\n/g, '\n     ')}`);
  }
}
await browser.close();
for (const d of daemons) d.proc.kill('SIGKILL');
console.log(`${chosen.length - failed} passed, ${failed} failed; screenshots in ${OUT}`);
process.exit(failed ? 1 : 0);
