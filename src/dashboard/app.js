// edgemon dashboard: one WebSocket per tab (/ws, multiplexed), canvas graphs drawn here, no framework.
'use strict';

const $ = (id) => document.getElementById(id);
let POINTS = 300;            // graph width in samples: --history, from the history frame
const MAX_POINTS = 3600;     // a day of history would cost a phone megabytes: show the last hour
const LOG_KEEP = 2000;       // lines kept per log source
const LOG_SHOW = 500;        // lines rendered
const BACKOFF_MIN = 500, BACKOFF_MAX = 10000;

// ---- state -----------------------------------------------------------------------------------

/** A fixed-size ring of numbers (NaN = no value), oldest first when read. */
class Ring {
  constructor(n) { this.a = new Float64Array(n).fill(NaN); this.i = 0; }
  push(v) { this.a[this.i] = v; this.i = (this.i + 1) % this.a.length; }
  at(k) { return this.a[(this.i + k) % this.a.length]; }
  get length() { return this.a.length; }
}

const S = {
  host: null,
  sys: null, sysAt: 0, sysTs: 0, lastSeq: 0,
  cpu: new Ring(POINTS), mem: new Ring(POINTS), swap: new Ring(POINTS),
  temp: new Ring(POINTS), rx: new Ring(POINTS), tx: new Ring(POINTS), disk: new Ring(POINTS),
  procs: [], sort: 'cpu',
  logs: new Map(),           // topic -> {lines: [{t, cls}], seq}
  logTopic: '', follow: true, filter: '', pendingWhilePaused: 0,
  conn: 'connecting', connText: 'connecting…', notice: '',
};

// ---- connection --------------------------------------------------------------------------------

let ws = null;               // the current socket; events of any other socket are ignored
let gen = 0;                 // generation of the current socket
let opened = false;          // the current socket reached onopen
let backoff = BACKOFF_MIN;
let retryTimer = 0;
const subscribed = new Set();

/** Topics this tab wants now: processes and logs only while visible. */
function wanted() {
  const t = new Set(['system']);
  if (document.visibilityState === 'visible') {
    t.add('processes');
    if (S.logTopic) t.add(S.logTopic);
  }
  return t;
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

/** Brings the subscriptions of the open socket in line with `wanted()`. */
function syncSubscriptions() {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const want = wanted();
  for (const t of subscribed) if (!want.has(t)) { send({ op: 'unsubscribe', topic: t }); subscribed.delete(t); }
  for (const t of want) if (!subscribed.has(t)) { send({ op: 'subscribe', topic: t }); subscribed.add(t); }
}

/** Closes the current socket (if any) and forgets it, so its late events are ignored. */
function dropSocket(code) {
  if (!ws) return;
  const old = ws;
  ws = null;
  old.onopen = old.onmessage = old.onclose = old.onerror = null;
  try { old.close(code || 1000); } catch (_) { /* already closing */ }
}

function connect() {
  clearTimeout(retryTimer);
  dropSocket(1000);
  const my = ++gen;
  opened = false;
  subscribed.clear();
  const sock = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws = sock;
  sock.onopen = () => {
    if (my !== gen) return;
    opened = true;
    setConn('live', 'live', '');
    syncSubscriptions();
  };
  sock.onmessage = (e) => {
    if (my !== gen) return;
    // Reset only once data flows: a server that accepts and drops at once still gets backoff.
    backoff = BACKOFF_MIN;
    let m;
    try { m = JSON.parse(e.data); } catch (_) { return; }
    handle(m);
  };
  sock.onerror = () => { /* onclose follows and decides */ };
  sock.onclose = () => {
    if (my !== gen) return;
    ws = null;
    subscribed.clear();
    if (opened) {
      setConn('reconnecting', 'reconnecting…', '');
      scheduleRetry();
    } else {
      // A browser cannot read why an upgrade was refused: ask over HTTP.
      explainRefusal().finally(scheduleRetry);
    }
  };
}

function scheduleRetry() {
  clearTimeout(retryTimer);
  const delay = Math.min(backoff, BACKOFF_MAX) * (0.5 + Math.random() * 0.5);
  backoff = Math.min(backoff * 2, BACKOFF_MAX);
  retryTimer = setTimeout(connect, delay);
}

async function explainRefusal() {
  try {
    const r = await fetch('/api/websocket/admission', { cache: 'no-store', signal: AbortSignal.timeout(5000) });
    const a = await r.json();
    if (a.per_ip && a.per_ip.used >= a.per_ip.limit) {
      setConn('limit', 'limit reached',
        `too many open dashboards from this device (limit ${a.per_ip.limit}); close one and this tab connects by itself`);
      return;
    }
    if (a.total && a.total.used >= a.total.limit) {
      setConn('limit', 'limit reached', `the server has reached its connection limit (${a.total.limit})`);
      return;
    }
  } catch (_) { /* the daemon is down: plain reconnecting */ }
  setConn('reconnecting', 'reconnecting…', '');
}

function setConn(kind, text, notice) {
  S.conn = kind; S.connText = text; S.notice = notice;
  dirty();
}

document.addEventListener('visibilitychange', () => { syncSubscriptions(); if (document.visibilityState === 'visible') dirty(); });
// Close explicitly on reload or navigation so the daemon frees this tab's slot at once.
window.addEventListener('pagehide', () => { clearTimeout(retryTimer); gen++; dropSocket(1001); });
// Back from the back/forward cache: the socket was closed on the way out, so open a new one.
window.addEventListener('pageshow', (e) => { if (e.persisted) connect(); });

// ---- messages ----------------------------------------------------------------------------------

function handle(m) {
  const topic = m.topic || '';
  if (topic === 'system') {
    if (m.type === 'history') {
      if (m.host) S.host = m.host;
      // A history that ends before what we have means the daemon restarted (seq starts at 1).
      const last = m.data.length ? m.data[m.data.length - 1].seq : 0;
      if (m.host && last < S.lastSeq) resetSeries();
      if (m.history_seconds) resizeSeries(Math.max(60, Math.min(MAX_POINTS, m.history_seconds)));
      for (const item of m.data) addSample(item.seq, item.ts, item.data);
    } else if (m.type === 'data') {
      addSample(m.seq, m.ts, m.data);
    }
  } else if (topic === 'processes' && m.type === 'data') {
    S.procs = m.data.processes || [];
  } else if (topic.startsWith('logs/')) {
    if (m.type === 'history') {
      const log = S.logs.get(topic);
      const last = m.data.length ? m.data[m.data.length - 1].seq : 0;
      if (log && last < log.seq) {
        // The source's hub was restarted (numbering starts again): mark the break.
        addLog(topic, '— log source restarted —', 'marker');
        log.seq = 0;
      }
      for (const item of m.data) addLog(topic, item.data.line, '', item.seq);
    } else if (m.type === 'data') addLog(topic, m.data.line, '', m.seq);
    else if (m.type === 'missed') addLog(topic, `— ${m.lines} line(s) missed —`, 'marker');
    else if (m.type === 'error') addLog(topic, `— ${m.error} —`, 'error');
  }
  dirty();
}

function addSample(seq, ts, d) {
  if (seq <= S.lastSeq) return;           // already have it (history overlaps live data)
  // A gap in seq (frames dropped, or the tab was asleep) leaves holes in the graphs.
  if (S.lastSeq && seq > S.lastSeq + 1) for (let k = Math.min(seq - S.lastSeq - 1, POINTS); k > 0; k--) pushNaN();
  S.lastSeq = seq;
  S.sys = d; S.sysTs = ts; S.sysAt = Date.now();
  S.cpu.push(d.cpu.total);
  S.mem.push(d.memory.total ? 100 * d.memory.used / d.memory.total : NaN);
  S.swap.push(d.swap.total ? 100 * d.swap.used / d.swap.total : NaN);
  S.temp.push(d.temperatures && d.temperatures.length ? Math.max(...d.temperatures.map((t) => t.celsius)) : NaN);
  let rx = NaN, tx = NaN;
  if (d.network) {
    const ifs = d.network.filter((i) => i.name !== 'lo' && i.rx_per_s !== null);
    if (ifs.length) { rx = ifs.reduce((s, i) => s + i.rx_per_s, 0); tx = ifs.reduce((s, i) => s + i.tx_per_s, 0); }
  }
  S.rx.push(rx); S.tx.push(tx);
  const root = d.disks && (d.disks.find((x) => x.mount === '/') || d.disks[0]);
  S.disk.push(root && root.total ? 100 * (root.total - root.available) / root.total : NaN);
}

const SERIES = () => [S.cpu, S.mem, S.swap, S.temp, S.rx, S.tx, S.disk];
function pushNaN() { for (const r of SERIES()) r.push(NaN); }
function resetSeries() { S.lastSeq = 0; for (const r of SERIES()) r.a.fill(NaN); }
/** Gives every graph `n` points (the daemon's --history); the history that follows refills them. */
function resizeSeries(n) {
  if (n === POINTS) return;
  POINTS = n;
  for (const k of ['cpu', 'mem', 'swap', 'temp', 'rx', 'tx', 'disk']) S[k] = new Ring(n);
  S.lastSeq = 0;
}

/** Appends a log line; numbered lines already shown (a resubscribe's history) are skipped. */
function addLog(topic, text, cls, seq) {
  let log = S.logs.get(topic);
  if (!log) { log = { lines: [], seq: 0 }; S.logs.set(topic, log); }
  if (seq) {
    if (seq <= log.seq) return;
    log.seq = seq;
  }
  log.lines.push({ t: text, cls });
  if (log.lines.length > LOG_KEEP) {
    const extra = log.lines.length - LOG_KEEP;
    log.lines.splice(0, extra);
  }
  if (!S.follow && topic === S.logTopic) S.pendingWhilePaused++;
}

// ---- rendering (at most once per animation frame) -----------------------------------------------

let framePending = false;
function dirty() {
  if (framePending) return;
  framePending = true;
  requestAnimationFrame(() => { framePending = false; render(); });
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const fmtPct = (v) => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(1) + ' %');
function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + ' ' + u[i];
}
function fmtDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}
function level(v, warn, hot) { return v >= hot ? 'hot' : v >= warn ? 'warn' : ''; }

function setText(id, text) { const el = $(id); if (el.textContent !== text) el.textContent = text; }

/** Replaces a container's rows: [label, fraction 0-1 or null, value text, level]. */
function rows(id, items, withMeter) {
  const el = $(id);
  const frag = document.createDocumentFragment();
  for (const [label, frac, val, lvl] of items) {
    const row = document.createElement('div');
    const l = document.createElement('span'); l.className = 'label'; l.textContent = label; l.title = label;
    row.appendChild(l);
    if (withMeter) {
      const m = document.createElement('span'); m.className = 'meter';
      const i = document.createElement('i');
      i.style.width = Math.max(0, Math.min(100, (frac || 0) * 100)).toFixed(1) + '%';
      if (lvl) i.className = lvl;
      m.appendChild(i); row.appendChild(m);
    }
    const v = document.createElement('span'); v.className = 'val' + (lvl ? ' ' + lvl : ''); v.textContent = val;
    row.appendChild(v);
    frag.appendChild(row);
  }
  el.replaceChildren(frag);
}

/** Draws series (rings) into a canvas; `max` fixes the scale, else it follows the data. */
function graph(id, series, colors, max) {
  const c = $(id);
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  const g = c.getContext('2d');
  g.clearRect(0, 0, w, h);
  let top = max;
  if (!top) {
    top = 1;
    for (const s of series) for (let k = 0; k < s.length; k++) { const v = s.at(k); if (v > top) top = v; }
    top *= 1.1;
  }
  g.strokeStyle = css('--line'); g.lineWidth = 1;
  g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
  series.forEach((s, si) => {
    g.strokeStyle = colors[si]; g.lineWidth = 1.5 * dpr;
    g.beginPath();
    let pen = false;
    for (let k = 0; k < s.length; k++) {
      const v = s.at(k);
      if (Number.isNaN(v)) { pen = false; continue; }
      const x = k / (s.length - 1) * w, y = h - Math.min(v / top, 1) * (h - 2 * dpr) - dpr;
      if (pen) g.lineTo(x, y); else { g.moveTo(x, y); pen = true; }
    }
    g.stroke();
  });
}

/** What the board is, for the header: OS, kernel, architecture, CPU model and cores, and the
 * address this page reached it at. Fields the daemon could not read ("unknown") are left out. */
function hostFacts(h) {
  const known = (v) => v && v !== 'unknown';
  const cpu = [known(h.cpu_model) ? h.cpu_model : '', h.cpu_count ? `${h.cpu_count} ${h.cpu_count === 1 ? 'core' : 'cores'}` : '']
    .filter(Boolean).join(', ');
  return [h.os, known(h.kernel) ? `kernel ${h.kernel}` : '', h.arch, cpu, location.host]
    .filter(known).join(' · ');
}

function render() {
  if (document.visibilityState !== 'visible') return;
  const d = S.sys;
  if (S.host) {
    setText('host', S.host.hostname);
    setText('sysinfo', hostFacts(S.host));
    const t = `${S.host.hostname} · edgemon`;
    if (document.title !== t) document.title = t;
  }
  const conn = $('conn');
  conn.className = 'conn ' + S.conn;
  setText('conn', S.connText);
  const notice = $('notice');
  notice.hidden = !S.notice;
  setText('notice', S.notice);
  setText('age', S.sysAt ? `data ${Math.max(0, Math.round((Date.now() - S.sysAt) / 1000))} s old` : '');
  if (d) {
    setText('uptime', d.uptime !== null ? 'up ' + fmtDuration(d.uptime) : '');
    setText('cpu-total', fmtPct(d.cpu.total));
    rows('cores', d.cpu.cores.map((v, i) => [`core ${i}`, v / 100, fmtPct(v), level(v, 70, 90)]), true);
    const freq = d.cpu.freq_mhz ? d.cpu.freq_mhz.reduce((s, f) => s + f, 0) / d.cpu.freq_mhz.length : 0;
    setText('load', (d.load ? `load ${d.load.one.toFixed(2)} (1 min) · ${d.load.five.toFixed(2)} (5 min) · ${d.load.fifteen.toFixed(2)} (15 min)` : '')
      + (freq ? ` · ${Math.round(freq)} MHz` : ''));
    const memPct = d.memory.total ? 100 * d.memory.used / d.memory.total : 0;
    setText('mem-pct', fmtPct(memPct));
    const swapPct = d.swap.total ? 100 * d.swap.used / d.swap.total : 0;
    rows('mem', [
      ['RAM', memPct / 100, `${fmtBytes(d.memory.used)} / ${fmtBytes(d.memory.total)}`, level(memPct, 80, 92)],
      ['swap', swapPct / 100, d.swap.total ? `${fmtBytes(d.swap.used)} / ${fmtBytes(d.swap.total)}` : 'none', level(swapPct, 50, 80)],
    ], true);
    renderTemps(d);
    renderNet(d);
    const disks = d.disks || [];
    rows('disks', disks.map((x) => {
      const used = x.total - x.available, pct = x.total ? 100 * used / x.total : 0;
      return [`${x.mount} (${x.fs})`, pct / 100, `${fmtBytes(used)} / ${fmtBytes(x.total)}`, level(pct, 85, 95)];
    }), true);
  }
  graph('g-cpu', [S.cpu], [css('--accent')], 100);
  graph('g-mem', [S.mem, S.swap], [css('--accent'), css('--warn')], 100);
  graph('g-temp', [S.temp], [css('--hot')], 0);
  graph('g-net', [S.rx, S.tx], [css('--accent2'), css('--accent')], 0);
  graph('g-disk', [S.disk], [css('--accent')], 100);
  renderProcs();
  renderLog();
}

function renderTemps(d) {
  const temps = d.temperatures || [];
  const max = temps.length ? Math.max(...temps.map((t) => t.celsius)) : NaN;
  const el = $('temp-max');
  el.textContent = Number.isNaN(max) ? (d.temperatures ? 'no sensors' : '–') : max.toFixed(1) + ' °C';
  el.className = 'big ' + (Number.isNaN(max) ? '' : level(max, 70, 80));
  rows('temps', temps.map((t) => {
    const hotAt = t.critical ? Math.min(80, t.critical - 10) : 80;
    return [t.label, null, t.celsius.toFixed(1) + ' °C', level(t.celsius, hotAt - 10, hotAt)];
  }), false);
  const pi = $('pi');
  const frag = document.createDocumentFragment();
  if (d.pi) {
    const names = { under_voltage: 'under-voltage', freq_capped: 'frequency capped', throttled: 'throttled', soft_temp_limit: 'soft temp limit' };
    let any = false;
    for (const [k, name] of Object.entries(names)) {
      const f = d.pi[k];
      if (!f || !(f.now || f.since_boot)) continue;
      any = true;
      const b = document.createElement('span');
      b.className = f.now ? 'now' : 'past';
      b.textContent = f.now ? `${name} now` : `${name} since boot`;
      frag.appendChild(b);
    }
    if (d.pi.under_voltage_alarm) {
      const b = document.createElement('span'); b.className = 'now'; b.textContent = 'under-voltage alarm'; frag.appendChild(b); any = true;
    }
    if (!any) { const b = document.createElement('span'); b.className = 'ok'; b.textContent = 'power and clocks OK'; frag.appendChild(b); }
  }
  pi.replaceChildren(frag);
}

function renderNet(d) {
  const ifs = (d.network || []).filter((i) => i.name !== 'lo');
  rows('net', ifs.map((i) => [i.name, null,
    i.rx_per_s === null ? '–' : `↓ ${fmtBytes(i.rx_per_s)}/s  ↑ ${fmtBytes(i.tx_per_s)}/s`, '']), false);
}

function renderProcs() {
  const procs = S.procs.slice().sort((a, b) => (S.sort === 'rss' ? b.rss - a.rss : b.cpu - a.cpu || b.rss - a.rss));
  const body = document.createDocumentFragment();
  for (const p of procs) {
    const tr = document.createElement('tr');
    for (const [v, cls] of [[p.pid, 'num'], [p.user, ''], [p.name, ''], [p.cmd, 'cmd'],
      [p.cpu.toFixed(1), 'num'], [fmtBytes(p.rss), 'num'], [p.state, 'state']]) {
      const td = document.createElement('td');
      td.textContent = v; if (cls) td.className = cls; td.title = String(v);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  $('procs').tBodies[0].replaceChildren(body);
  for (const th of document.querySelectorAll('th.sort')) th.classList.toggle('sorted', th.dataset.sort === S.sort);
}

let shownLog = null;         // what the log view shows now, to skip identical redraws
function renderLog() {
  const log = S.logs.get(S.logTopic);
  const st = $('log-status');
  if (!S.follow) {
    st.textContent = S.pendingWhilePaused ? `paused · ${S.pendingWhilePaused} new line(s)` : 'paused';
    return;
  }
  st.textContent = '';
  const lines = log ? log.lines : [];
  const f = S.filter.toLowerCase();
  const shown = (f ? lines.filter((l) => l.t.toLowerCase().includes(f)) : lines).slice(-LOG_SHOW);
  const key = shown.length + '|' + (shown.length ? shown[shown.length - 1].t : '') + '|' + f + '|' + S.logTopic + '|' + lines.length;
  if (key === shownLog) return;
  shownLog = key;
  const pre = $('log');
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30;
  const frag = document.createDocumentFragment();
  for (const l of shown) {
    if (l.cls) { const s = document.createElement('span'); s.className = l.cls; s.textContent = l.t + '\n'; frag.appendChild(s); }
    else frag.appendChild(document.createTextNode(l.t + '\n'));
  }
  pre.replaceChildren(frag);
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// ---- controls ------------------------------------------------------------------------------------

for (const th of document.querySelectorAll('th.sort')) {
  const pick = () => { S.sort = th.dataset.sort; dirty(); };
  th.addEventListener('click', pick);
  th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') pick(); });
}
$('log-source').addEventListener('change', (e) => { S.logTopic = e.target.value; shownLog = null; syncSubscriptions(); dirty(); });
$('log-follow').addEventListener('click', () => {
  S.follow = !S.follow;
  $('log-follow').textContent = S.follow ? 'Pause' : 'Follow';
  if (S.follow) { S.pendingWhilePaused = 0; shownLog = null; }
  dirty();
});
$('log-filter').addEventListener('input', (e) => { S.filter = e.target.value; dirty(); });
$('log-clear').addEventListener('click', () => { S.logs.delete(S.logTopic); S.pendingWhilePaused = 0; shownLog = null; dirty(); });

/** Fills the log source picker from /api/topics. */
async function loadSources() {
  try {
    const r = await fetch('/api/topics', { cache: 'no-store' });
    const logs = ((await r.json()).topics || []).filter((t) => t.startsWith('logs/'));
    const sel = $('log-source');
    sel.replaceChildren();
    const none = document.createElement('option');
    none.value = ''; none.textContent = logs.length ? 'pick a log…' : 'no log sources';
    sel.appendChild(none);
    for (const t of logs) { const o = document.createElement('option'); o.value = t; o.textContent = t.slice(5); sel.appendChild(o); }
  } catch (_) { /* the daemon is down; the picker stays as it is */ }
}

// The age shown in the header moves on even when no frame arrives.
setInterval(() => { if (S.sysAt) dirty(); }, 1000);
window.addEventListener('resize', dirty);
loadSources();
connect();
