// edgemon dashboard: one WebSocket per tab (/ws, multiplexed), canvas graphs drawn here, no framework.
'use strict';

const $ = (id) => document.getElementById(id);
const LOG_KEEP = 2000;       // lines kept per log source
const LOG_SHOW = 500;        // lines rendered
const BACKOFF_MIN = 500, BACKOFF_MAX = 8000;
const STALE_MS = 3500;       // data older than this is dimmed
const EVENTS_EVERY_MS = 60000;

/** The ranges of DESIGN.md: name, span (ms), label, time-axis tick spacing (ms). */
const RANGES = [
  ['10m', 600e3, '10 min', 120e3], ['1h', 3600e3, '1 h', 600e3], ['6h', 21600e3, '6 h', 3600e3],
  ['24h', 86400e3, '24 h', 4 * 3600e3], ['7d', 7 * 86400e3, '7 d', 86400e3],
];
const RANGE = Object.fromEntries(RANGES.map(([name, span, label, tick]) => [name, { name, span, label, tick }]));

// ---- state -----------------------------------------------------------------------------------

/**
 * One range's points, oldest first: `ts` (unix ms, the start of each interval) and per series
 * name `{min, mean, max}` arrays aligned with it, `null` where there is no value. Filled from the
 * daemon's history answers and from live samples, merged by `ts`, so a reconnect or a daemon
 * restart adds to what is drawn instead of wiping it.
 */
class Store {
  constructor(range, step) {
    this.range = range; this.step = step; this.ts = []; this.s = new Map();
    this.openCount = 0;      // live samples folded into the newest interval
    this.fresh = false;      // answered by the daemon on the current socket
    this.merges = 0;         // answers merged in (a live sample is not one): graphs repaint
  }

  /** Merges a history answer: its values win where it has one, ours stay where it has none. */
  merge(ts, series) {
    const old = this.ts, from = [];
    const out = [];
    for (let i = 0, j = 0; i < old.length || j < ts.length;) {
      const a = i < old.length ? old[i] : Infinity, b = j < ts.length ? ts[j] : Infinity;
      if (a === b) { out.push(a); from.push(i++, j++); } else if (a < b) { out.push(a); from.push(i++, -1); } else { out.push(b); from.push(-1, j++); }
    }
    const next = new Map();
    for (const name of new Set([...this.s.keys(), ...Object.keys(series)])) {
      const o = this.s.get(name), n = series[name], r = { min: [], mean: [], max: [] };
      for (let k = 0; k < from.length; k += 2) {
        const oi = from[k], ni = from[k + 1];
        for (const f of ['min', 'mean', 'max']) {
          let v = ni >= 0 && n && n[f] ? n[f][ni] : null;
          if (v === null || v === undefined) v = oi >= 0 && o ? o[f][oi] : null;
          r[f].push(v);
        }
      }
      next.set(name, r);
    }
    this.ts = out; this.s = next; this.merges++;
    // The daemon's open interval holds samples we did not see: count them by its age.
    this.openCount = out.length ? Math.max(1, Math.round((Date.now() - skew - out[out.length - 1]) / 1000)) : 0;
    this.trim();
  }

  /** Folds one sample (`[name, value]` pairs, taken at `ts`) into its interval. */
  add(ts, values) {
    const slot = Math.floor(ts / this.step) * this.step;
    const n = this.ts.length;
    if (n && slot < this.ts[n - 1]) return;   // older than what we have: the answer had it
    if (!n || slot > this.ts[n - 1]) {
      this.ts.push(slot);
      for (const v of this.s.values()) { v.min.push(null); v.mean.push(null); v.max.push(null); }
      this.openCount = 0;
    }
    const i = this.ts.length - 1, c = this.openCount;
    for (const [name, x] of values) {
      let v = this.s.get(name);
      if (!v) {
        const len = this.ts.length;
        v = { min: new Array(len).fill(null), mean: new Array(len).fill(null), max: new Array(len).fill(null) };
        this.s.set(name, v);
      }
      if (v.mean[i] === null || c === 0) { v.min[i] = v.mean[i] = v.max[i] = x; continue; }
      v.min[i] = Math.min(v.min[i], x); v.max[i] = Math.max(v.max[i], x);
      v.mean[i] += (x - v.mean[i]) / (c + 1);
    }
    this.openCount = c + 1;
    this.trim();
  }

  /** Forgets points older than the range (and one step for the partly shown one). */
  trim() {
    const n = this.ts.length;
    if (!n) return;
    const cut = this.ts[n - 1] - RANGE[this.range].span - this.step;
    let k = 0;
    while (k < n && this.ts[k] < cut) k++;
    if (!k) return;
    this.ts.splice(0, k);
    for (const v of this.s.values()) { v.min.splice(0, k); v.mean.splice(0, k); v.max.splice(0, k); }
  }
}

/** The history series of one sample, named as the daemon names them (`history::series_of`). */
function seriesOf(d) {
  const v = [['cpu.total', d.cpu.total]];
  d.cpu.cores.forEach((c, i) => v.push([`cpu.core.${i}`, c]));
  v.push(['memory.used', d.memory.used], ['swap.used', d.swap.used]);
  if (d.load) v.push(['load.one', d.load.one], ['load.five', d.load.five], ['load.fifteen', d.load.fifteen]);
  for (const t of d.temperatures || []) v.push([`temp.${t.label}`, t.celsius]);
  for (const n of d.network || []) {
    if (n.rx_per_s !== null) v.push([`net.${n.name}.rx_per_s`, n.rx_per_s]);
    if (n.tx_per_s !== null) v.push([`net.${n.name}.tx_per_s`, n.tx_per_s]);
  }
  for (const x of d.disks || []) if (x.total) v.push([`disk.${x.mount}.used_pct`, 100 * (x.total - x.available) / x.total]);
  return v;
}

let savedRange = '10m';
try { savedRange = localStorage.getItem('edgemon.range') || '10m'; } catch (_) { /* storage off */ }

const S = {
  host: null,
  sys: null, sysAt: 0, sysTs: 0, lastSeq: 0,
  range: RANGE[savedRange] ? savedRange : '10m',
  stores: new Map(),         // range -> Store
  pending: null,             // a history answer arriving in parts: {range, step, ts, series, parts, got}
  events: [], eventsAt: 0,
  alerts: null,              // the `alerts` topic's data: {alerts: [...], resolved: [...]}
  hover: null,               // {ts} while a pointer is over a graph
  procs: [], sort: 'cpu', writers: [], ioReadable: '',
  services: null,            // the newest `services` data; unavailable: the card stays hidden
  containers: null,          // the newest `containers` data; unavailable or empty: no card
  fleet: null,               // the newest `fleet` data (boards), while the fleet view is shown
  fleetShown: (() => { try { return localStorage.getItem('edgemon.fleet') === '1'; } catch (_) { return false; } })(),
  logs: new Map(),           // topic -> {lines: [{id, t, cls}], nextId, pos}
  logTopic: '', follow: true, filter: '', pausedAt: 0,
  conn: 'connecting', connText: 'connecting…', notice: '',
};
let skew = 0;                // our clock minus the daemon's, from the newest sample

function store(range) {
  let st = S.stores.get(range);
  if (!st) { st = new Store(range, range === '10m' ? 1000 : 0); S.stores.set(range, st); }
  return st;
}

// ---- connection --------------------------------------------------------------------------------

let ws = null;               // the current socket; events of any other socket are ignored
let gen = 0;                 // generation of the current socket
let opened = false;          // the current socket reached onopen
let backoff = BACKOFF_MIN;
let retryTimer = 0;
const subscribed = new Set();

/** Topics this tab wants now: processes and logs only while visible. */
function wanted() {
  // Alerts stay subscribed while hidden too (a frame every 10 s at most): the tab's title says
  // when one fires.
  const t = new Set(['system', 'alerts']);
  if (document.visibilityState === 'visible') {
    t.add('processes');
    if (S.logTopic) t.add(S.logTopic);
    // Units while the tab is seen, unless this socket heard there is no systemd to ask.
    if (!(S.services && S.services.available === false)) t.add('services');
    // Containers likewise, unless there is no engine to ask (no --docker-socket, or it is gone).
    if (!(S.containers && S.containers.available === false)) t.add('containers');
    // Every board's state, only while the fleet view is open: it makes this board call them.
    if (S.fleetShown) t.add('fleet');
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
  for (const t of want) {
    if (subscribed.has(t)) continue;
    // A log this tab has lines of resumes right after the last one: nothing twice, no gap.
    const log = t.startsWith('logs/') && S.logs.get(t);
    send(log && log.pos ? { op: 'subscribe', topic: t, after: log.pos } : { op: 'subscribe', topic: t });
    subscribed.add(t);
  }
}

/** Asks for the shown range's history unless this socket already answered it (the daemon
 * answers each range at most once per 10 s per connection; live samples keep it current). */
function requestRange() {
  const st = store(S.range);
  if (st.fresh || !ws || ws.readyState !== WebSocket.OPEN) return;
  st.fresh = true;
  send({ op: 'history', topic: 'system', range: S.range });
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
  S.services = null;
  S.containers = null;
  for (const st of S.stores.values()) st.fresh = false;
  S.pending = null;
  const sock = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws = sock;
  sock.onopen = () => {
    if (my !== gen) return;
    opened = true;
    setConn('live', 'live', '');
    syncSubscriptions();
    requestRange();
    loadEvents();
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

/** "Retry now", the network coming back, or the tab shown again: no reason to wait. */
function retryNow() {
  if (ws) return;
  backoff = BACKOFF_MIN;
  connect();
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

document.addEventListener('visibilitychange', () => {
  syncSubscriptions();
  if (document.visibilityState === 'visible') { if (S.conn === 'reconnecting') retryNow(); dirty(); }
});
window.addEventListener('online', () => { if (S.conn === 'reconnecting') retryNow(); });
// Close explicitly on reload or navigation so the daemon frees this tab's slot at once.
window.addEventListener('pagehide', () => { clearTimeout(retryTimer); gen++; dropSocket(1001); });
// Back from the back/forward cache: the socket was closed on the way out, so open a new one.
window.addEventListener('pageshow', (e) => { if (e.persisted) connect(); });

/** The event list for markers: on connect, on a range change, then once a minute. */
async function loadEvents() {
  S.eventsAt = Date.now();
  try {
    const r = await fetch('/api/events', { cache: 'no-store', signal: AbortSignal.timeout(5000) });
    if (!r.ok) return;
    S.events = ((await r.json()).events || []).filter((e) => Number.isFinite(e.ts));
    dirty();
  } catch (_) { /* the daemon is down; markers stay as they are */ }
}

// ---- messages ----------------------------------------------------------------------------------

function handle(m) {
  const topic = m.topic || '';
  if (topic === 'system') {
    if (m.type === 'history' && m.range) rangePart(m);
    else if (m.type === 'history') {
      if (m.host) S.host = m.host;
      for (const item of m.data) addSample(item.seq, item.ts, item.data);
    } else if (m.type === 'data') {
      addSample(m.seq, m.ts, m.data);
    } else if (m.type === 'error') {
      // A range asked too soon (or unknown): ask again on the next range change or reconnect.
      for (const st of S.stores.values()) if (st.fresh && !st.ts.length) st.fresh = false;
    }
    dirty('sys');
  } else if (topic === 'alerts' && m.type === 'data') {
    const before = firingKey();
    S.alerts = m.data;
    // A change of what fires is news now; fresh values alone wait for the next frame.
    if (firingKey() !== before) { loadEvents(); dirty('alerts'); } else dirty('alerts-late');
    titleNow();
  } else if (topic === 'processes' && m.type === 'data') {
    S.procs = m.data.processes || [];
    S.writers = m.data.writers || [];
    S.ioReadable = m.data.io_readable || '';
    dirty('procs');
  } else if (topic === 'services' && m.type === 'data') {
    S.services = m.data;
    // Nothing to ask here (no systemd): stop listening; a reconnect asks again.
    if (m.data.available === false) syncSubscriptions();
    dirty('procs');
  } else if (topic === 'fleet' && m.type === 'data') {
    S.fleet = m.data;
    dirty('procs');
  } else if (topic === 'containers' && m.type === 'data') {
    S.containers = m.data;
    if (m.data.available === false) syncSubscriptions();
    dirty('procs');
  } else if (topic.startsWith('logs/')) {
    // The daemon sends each line once (a resubscribe resumes after our last `pos`), so every
    // line is appended as it comes.
    if (m.type === 'history') for (const item of m.data) addLog(topic, item.data.line, levelOf(item.data.line), item.data.pos);
    else if (m.type === 'data') addLog(topic, m.data.line, levelOf(m.data.line), m.data.pos);
    else if (m.type === 'missed') addLog(topic, missedText(m), 'marker');
    else if (m.type === 'error') addLog(topic, `— ${m.error} —`, 'error');
    dirty('log');
  } else dirty();
}

/** One part of a range answer (`part` of `parts`; `ts` in the first): merged when complete. */
function rangePart(m) {
  if (m.part === 1 || !S.pending || S.pending.range !== m.range) {
    S.pending = { range: m.range, step: m.step_ms, ts: m.ts || [], series: {}, got: 0 };
  }
  const p = S.pending;
  Object.assign(p.series, m.series || {});
  p.got++;
  if (m.part !== m.parts) return;
  S.pending = null;
  const st = store(p.range);
  st.step = p.step;
  st.merge(p.ts, p.series);
}

function addSample(seq, ts, d) {
  if (ts <= S.sysTs) return;              // already have it (history overlaps live data)
  S.lastSeq = seq;
  S.sys = d; S.sysTs = ts; S.sysAt = Date.now();
  skew = Date.now() - ts;
  const values = seriesOf(d);
  for (const st of S.stores.values()) if (st.step) st.add(ts, values);
}

const MISSED = {
  rotated: 'the file was rotated', truncated: 'the file was truncated', too_far: 'too many to fetch',
  not_resumable: 'the source cannot resume there', unknown: 'the source could not be read again',
};
function missedText(m) {
  if (m.lines !== null && m.lines !== undefined) return `— ${m.lines} line(s) missed —`;
  return `— lines missed: ${MISSED[m.reason] || m.reason || 'unknown'} —`;
}

/** A line's level, when it says one: errors, warnings, debug. */
function levelOf(t) {
  if (/\b(emerg|emergency|alert|crit|critical|fatal|panic|err|error|failed|failure)\b/i.test(t)) return 'lv-err';
  if (/\b(warn|warning)\b/i.test(t)) return 'lv-warn';
  if (/\b(debug|trace)\b/i.test(t)) return 'lv-debug';
  return '';
}

/** Appends a log line (and remembers its `pos`, where a resubscribe resumes). */
function addLog(topic, text, cls, pos) {
  let log = S.logs.get(topic);
  if (!log) { log = { lines: [], nextId: 0, pos: null }; S.logs.set(topic, log); }
  if (pos) log.pos = pos;
  log.lines.push({ id: ++log.nextId, t: text, cls });
  if (log.lines.length > LOG_KEEP) log.lines.splice(0, log.lines.length - LOG_KEEP);
}

// ---- formatting ----------------------------------------------------------------------------------

// Theme colours, read once per theme (getComputedStyle on every draw forces a style pass).
const cssCache = new Map();
const css = (name) => {
  let v = cssCache.get(name);
  if (v === undefined) { v = getComputedStyle(document.documentElement).getPropertyValue(name).trim(); cssCache.set(name, v); }
  return v;
};
window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { cssCache.clear(); dirty(); });
const missing = (v) => v === null || v === undefined || Number.isNaN(v);
const fmtPct = (v) => (missing(v) ? '–' : v.toFixed(1) + ' %');
function fmtBytes(n) {
  if (missing(n)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + ' ' + u[i];
}
function fmtDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}
const pad = (n) => String(n).padStart(2, '0');
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
function fmtTime(ts, withSeconds) {
  const t = new Date(ts);
  return `${pad(t.getHours())}:${pad(t.getMinutes())}` + (withSeconds ? `:${pad(t.getSeconds())}` : '');
}
function fmtWhen(ts, range) {
  const t = new Date(ts);
  const day = range === '24h' || range === '7d' ? `${DAYS[t.getDay()]} ` : '';
  return day + fmtTime(ts, range === '10m');
}
function level(v, warn, hot) { return v >= hot ? 'hot' : v >= warn ? 'warn' : ''; }

/** Value units of the graphs: how a value and an axis label read. */
const UNITS = {
  pct: { fmt: (v) => fmtPct(v), tick: (v) => `${Math.round(v)} %` },
  degC: { fmt: (v) => (missing(v) ? '–' : v.toFixed(1) + ' °C'), tick: (v) => `${Math.round(v)} °C` },
  Bps: { fmt: (v) => (missing(v) ? '–' : fmtBytes(v) + '/s'), tick: (v) => fmtRate(v) },
};
function fmtRate(v) {
  const u = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s'];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${u[i]}`;
}

/** The smallest 1, 2 or 5 × 10ⁿ at or above `v`. */
function niceUp(v) {
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * e >= v) return m * e;
  return 10 * e;
}

/** An axis for values `lo`–`hi`: fixed for percentages, else a nice top with a sensible least
 * full scale (10 KiB/s for a network, 20 °C of span for temperatures). */
function scale(unit, lo, hi) {
  if (unit === 'pct') return [0, 100];
  if (unit === 'Bps') {
    const top = Math.max(hi * 1.1, 10 * 1024);
    let k = 0;
    while (top / Math.pow(1024, k) >= 1000 && k < 3) k++;
    return [0, niceUp(top / Math.pow(1024, k)) * Math.pow(1024, k)];
  }
  if (!Number.isFinite(lo)) { lo = 30; hi = 50; }
  let top = Math.ceil((hi + 2) / 10) * 10, bottom = Math.floor((lo - 2) / 10) * 10;
  if (top - bottom < 20) bottom = top - 20;
  return [Math.max(0, bottom), Math.max(top, 20)];
}

// ---- graphs ----------------------------------------------------------------------------------------

const COLORS = ['--accent', '--accent2', '--warn', '--hot', '--violet'];
const sorted = (st, prefix, suffix = '') =>
  [...st.s.keys()].filter((k) => k.startsWith(prefix) && k.endsWith(suffix)).sort();
/** `f` applied to every figure of a series (a copy). */
const mapSeries = (v, f) => ({ min: v.min.map((x) => (x === null ? null : f(x))), mean: v.mean.map((x) => (x === null ? null : f(x))), max: v.max.map((x) => (x === null ? null : f(x))) });
/** The sum of several series, point by point; `null` only where all are missing. */
function sumSeries(list, len) {
  const r = { min: new Array(len).fill(null), mean: new Array(len).fill(null), max: new Array(len).fill(null) };
  for (const v of list) for (const f of ['min', 'mean', 'max']) for (let i = 0; i < len; i++) if (v[f][i] !== null) r[f][i] = (r[f][i] || 0) + v[f][i];
  return r;
}

/** The graphs: which series each draws from a store, in which unit. */
const GRAPHS = [
  { id: 'cpu', title: 'CPU', unit: 'pct', lines: (st) => (st.s.has('cpu.total') ? [{ label: 'total', ...st.s.get('cpu.total') }] : []) },
  { id: 'mem', title: 'Memory', unit: 'pct', lines: (st) => {
    const d = S.sys, out = [];
    if (!d) return out;
    if (d.memory.total && st.s.has('memory.used')) out.push({ label: 'RAM', ...mapSeries(st.s.get('memory.used'), (x) => 100 * x / d.memory.total) });
    if (d.swap.total && st.s.has('swap.used')) out.push({ label: 'swap', ...mapSeries(st.s.get('swap.used'), (x) => 100 * x / d.swap.total) });
    return out;
  } },
  { id: 'temp', title: 'Temperature', unit: 'degC', lines: (st) => sorted(st, 'temp.').slice(0, 5).map((k) => ({ label: k.slice(5), ...st.s.get(k) })) },
  { id: 'net', title: 'Network', unit: 'Bps', lines: (st) => {
    const rx = sorted(st, 'net.', '.rx_per_s'), tx = sorted(st, 'net.', '.tx_per_s');
    if (!rx.length && !tx.length) return [];
    return [{ label: 'received', ...sumSeries(rx.map((k) => st.s.get(k)), st.ts.length) },
      { label: 'sent', ...sumSeries(tx.map((k) => st.s.get(k)), st.ts.length) }];
  } },
  { id: 'disk', title: 'Disk used', unit: 'pct', lines: (st) => sorted(st, 'disk.', '.used_pct').slice(0, 5).map((k) => ({ label: k.slice(5, -9), ...st.s.get(k) })) },
];

/** Index of the point of `st` nearest to `ts` within one and a half steps, or -1. */
function nearest(st, ts) {
  const a = st.ts;
  let lo = 0, hi = a.length - 1;
  if (hi < 0) return -1;
  while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] < ts) lo = m + 1; else hi = m; }
  let best = lo;
  if (lo > 0 && Math.abs(a[lo - 1] - ts) < Math.abs(a[lo] - ts)) best = lo - 1;
  return Math.abs(a[best] - ts) <= st.step * 1.5 ? best : -1;
}
const lastValue = (v) => { for (let i = v.mean.length - 1; i >= 0; i--) if (v.mean[i] !== null) return v.mean[i]; return null; };

/** The time ticks in [from, to]: at local multiples of the range's spacing. */
function timeTicks(range, from, to) {
  const step = RANGE[range].tick;
  const off = -new Date(to).getTimezoneOffset() * 60000;
  const out = [];
  for (let t = Math.ceil((from + off) / step) * step - off; t <= to; t += step) out.push(t);
  return out;
}

/** A time axis label: the weekday on the week, hours and minutes below it. */
const tickLabel = (t) => fmtWhen(t, S.range === '7d' ? '7d' : '6h');

const PAD = { l: 52, r: 6, t: 8, b: 18 };   // CSS px around the plot

/** A canvas's CSS size, kept by a ResizeObserver so drawing never forces a layout. */
const sizes = new Map();
const resized = new ResizeObserver((entries) => {
  for (const e of entries) sizes.set(e.target, [e.contentRect.width, e.contentRect.height]);
  dirty();
});
function sizeOf(c) {
  let s = sizes.get(c);
  if (!s) { s = [c.clientWidth, c.clientHeight]; sizes.set(c, s); resized.observe(c); }
  return s;
}
/** Sets a data attribute only when it changes (an unchanged write still costs a mutation). */
function setData(el, k, v) { if (el.dataset[k] !== v) el.dataset[k] = v; }

/** Draws one graph for the shown range and describes it (label, legend, test hooks). */
function drawGraph(def, st, to, force) {
  const c = $('g-' + def.id);
  const span = RANGE[S.range].span, from = to - span;
  const lines = def.lines(st);
  const dpr = window.devicePixelRatio || 1;
  const [cw, ch] = sizeOf(c);
  const w = Math.max(1, Math.round(cw * dpr)), h = Math.max(1, Math.round(ch * dpr));
  const pw = cw - PAD.l - PAD.r, ph = ch - PAD.t - PAD.b;
  // The scale covers what is in view: min to max of every line.
  let lo = Infinity, hi = -Infinity;
  for (const l of lines) for (let i = 0; i < st.ts.length; i++) {
    if (st.ts[i] + st.step < from) continue;
    if (l.max[i] !== null) hi = Math.max(hi, l.max[i]);
    if (l.min[i] !== null) lo = Math.min(lo, l.min[i]);
  }
  if (hi === -Infinity) { lo = NaN; hi = 0; }
  const [y0, y1] = scale(def.unit, lo, hi);
  const unit = UNITS[def.unit];
  // Painting is most of what the page costs: a graph is painted again only when its picture
  // would move, i.e. time has advanced a device pixel (10 min over 300 px: every 2 s; 7 days:
  // every half hour), or its size, scale, lines, events, range, merged history or the crosshair
  // changed. Its legend and label still follow every sample.
  const sig = [S.range, st.merges, w, h, y0, y1, lines.length, S.events.length, S.hover ? S.hover.ts : ''].join('|');
  if (!force && !S.hover && c._sig === sig && (to - c._to) / span * pw * dpr < 1) {
    const vals = legendValues(lines, unit, -1);
    renderLegend(def.id, vals, '', null);
    graphLabel(c, def, vals, unit, y0, y1);
    // The time the pointer maps to follows the clock (the picture is less than a pixel behind):
    // the newest samples are within the plot for the crosshair.
    setData(c, 'from', String(from)); setData(c, 'to', String(to));
    return lines.length > 0;
  }
  c._sig = sig; c._to = to;
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cw, ch);
  const X = (t) => PAD.l + (t - from) / span * pw;
  const Y = (v) => PAD.t + ph - (Math.min(Math.max(v, y0), y1) - y0) / (y1 - y0) * ph;
  const dim = css('--dim'), grid = css('--line');
  g.font = '11px system-ui, sans-serif';
  g.lineWidth = 1;
  // Value axis: bottom, middle and top, with grid lines.
  const yTicks = [y0, (y0 + y1) / 2, y1];
  g.fillStyle = dim; g.textAlign = 'right'; g.textBaseline = 'middle';
  for (const v of yTicks) {
    const y = Math.round(Y(v)) + 0.5;
    g.strokeStyle = grid; g.beginPath(); g.moveTo(PAD.l, y); g.lineTo(PAD.l + pw, y); g.stroke();
    g.fillText(unit.tick(v), PAD.l - 4, y);
  }
  // Time axis.
  const xTicks = timeTicks(S.range, from, to);
  g.textAlign = 'center'; g.textBaseline = 'top';
  // Every tick gets a grid line; labels only where they fit (every second one on a phone).
  const labelW = g.measureText('Wed 00').width + 10;
  const every = Math.max(1, Math.ceil(labelW / (pw / Math.max(1, span / RANGE[S.range].tick))));
  xTicks.forEach((t, k) => {
    const x = Math.round(X(t)) + 0.5;
    g.strokeStyle = grid; g.beginPath(); g.moveTo(x, PAD.t); g.lineTo(x, PAD.t + ph); g.stroke();
    const label = tickLabel(t), half = g.measureText(label).width / 2;
    if (Math.floor(t / RANGE[S.range].tick) % every === 0 && x - half >= PAD.l - 4 && x + half <= cw) g.fillText(label, x, PAD.t + ph + 3);
  });
  // Lines: a break wherever a value is missing or points are further apart than a gap.
  const gap = Math.max(3 * st.step, 30000);
  g.save();
  g.beginPath(); g.rect(PAD.l, 0, pw, ch); g.clip();
  const band = st.step > 1000;
  let segments = 0;
  lines.forEach((l, li) => {
    const color = css(COLORS[li % COLORS.length]);
    const runs = [];
    let run = null, prev = -Infinity;
    for (let i = 0; i < st.ts.length; i++) {
      const t = st.ts[i];
      if (t + st.step < from || l.mean[i] === null) { run = null; continue; }
      if (!run || t - prev > gap) { run = []; runs.push(run); }
      run.push(i); prev = t;
    }
    segments += runs.length;
    const mid = band ? st.step / 2 : 0;    // an interval's point sits at its middle
    if (band) {
      g.fillStyle = color; g.globalAlpha = 0.22;
      for (const r of runs) {
        g.beginPath();
        r.forEach((i, k) => { const x = X(st.ts[i] + mid), y = Y(l.max[i] ?? l.mean[i]); if (k) g.lineTo(x, y); else g.moveTo(x, y); });
        for (let k = r.length - 1; k >= 0; k--) g.lineTo(X(st.ts[r[k]] + mid), Y(l.min[r[k]] ?? l.mean[r[k]]));
        g.closePath(); g.fill();
      }
      g.globalAlpha = 1;
    }
    g.strokeStyle = color; g.lineWidth = 1.5; g.lineJoin = 'round';
    for (const r of runs) {
      g.beginPath();
      if (r.length === 1) { const x = X(st.ts[r[0]] + mid), y = Y(l.mean[r[0]]); g.moveTo(x - 1, y); g.lineTo(x + 1, y); }
      r.forEach((i, k) => { const x = X(st.ts[i] + mid), y = Y(l.mean[i]); if (k) g.lineTo(x, y); else g.moveTo(x, y); });
      g.stroke();
    }
  });
  // Event markers: a tick at the top of the plot, coloured by how bad.
  const marks = S.events.filter((e) => e.ts >= from && e.ts <= to);
  for (const e of marks) {
    const x = X(e.ts);
    g.fillStyle = css(eventColor(e));
    g.beginPath(); g.moveTo(x - 4, PAD.t - 1); g.lineTo(x + 4, PAD.t - 1); g.lineTo(x, PAD.t + 6); g.closePath(); g.fill();
  }
  // Crosshair.
  let hoverIdx = -1, hoverEvent = null;
  if (S.hover) {
    const x = X(S.hover.ts);
    g.strokeStyle = css('--fg'); g.globalAlpha = 0.6; g.lineWidth = 1;
    g.beginPath(); g.moveTo(Math.round(x) + 0.5, PAD.t); g.lineTo(Math.round(x) + 0.5, PAD.t + ph); g.stroke();
    g.globalAlpha = 1;
    hoverIdx = nearest(st, S.hover.ts - (band ? st.step / 2 : 0));
    hoverEvent = marks.find((e) => Math.abs(X(e.ts) - x) <= 6) || null;
  }
  g.restore();
  // Legend with the current (or hovered) value of each line; the same words label the canvas.
  const vals = legendValues(lines, unit, hoverIdx);
  renderLegend(def.id, vals, S.hover ? fmtWhen(S.hover.ts, S.range) : '', hoverEvent);
  graphLabel(c, def, vals, unit, y0, y1);
  setData(c, 'yTicks', yTicks.map(unit.tick).join('|'));
  setData(c, 'xTicks', xTicks.map(tickLabel).join('|'));
  setData(c, 'from', String(from)); setData(c, 'to', String(to));
  setData(c, 'segments', String(segments));
  setData(c, 'events', String(marks.length));
  setData(c, 'lines', lines.map((l) => l.label).join('|'));
  return lines.length > 0;
}

/** Each line's legend entry: its value at `idx` (the crosshair's), or its latest with -1. */
function legendValues(lines, unit, idx) {
  return lines.map((l, li) => {
    const v = idx >= 0 ? l.mean[idx] : lastValue(l);
    return { label: l.label, color: COLORS[li % COLORS.length], text: unit.fmt(v === null ? NaN : v) };
  });
}

/** The canvas's accessible label: what it shows, its values now and its scale. */
function graphLabel(c, def, vals, unit, y0, y1) {
  const now = vals.map((v) => `${v.label} ${v.text}`).join(', ') || 'no data';
  const label = `${def.title} over the last ${RANGE[S.range].label}: ${now}; scale ${unit.tick(y0)} to ${unit.tick(y1)}`;
  if (c.getAttribute('aria-label') !== label) c.setAttribute('aria-label', label);
}

function eventColor(e) {
  if (e.kind === 'under_voltage' || e.kind === 'oom_kill' || (e.kind === 'alert' && /critical/.test(e.text))) return '--hot';
  if (e.kind === 'daemon_start' || e.kind === 'daemon_stop' || e.kind === 'reboot') return '--dim';
  return '--warn';
}

function renderLegend(id, vals, when, event) {
  const el = $('lg-' + id);
  const key = JSON.stringify([vals, when, event && event.ts]);
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  const frag = document.createDocumentFragment();
  if (when) { const t = document.createElement('span'); t.className = 'when'; t.textContent = when; frag.appendChild(t); }
  for (const v of vals) {
    const s = document.createElement('span');
    const sw = document.createElement('i'); sw.style.background = css(v.color); s.appendChild(sw);
    s.appendChild(document.createTextNode(`${v.label} `));
    const b = document.createElement('b'); b.textContent = v.text; s.appendChild(b);
    frag.appendChild(s);
  }
  if (event) { const e = document.createElement('span'); e.className = 'event'; e.textContent = `${fmtWhen(event.ts, S.range)} ${event.text}`; frag.appendChild(e); }
  el.replaceChildren(frag);
}

/** The crosshair: a pointer over any graph puts the same time on all of them. */
function hoverAt(canvas, clientX) {
  const r = canvas.getBoundingClientRect();
  const from = Number(canvas.dataset.from), to = Number(canvas.dataset.to);
  if (!from || !to) return;
  const f = (clientX - r.left - PAD.l) / (r.width - PAD.l - PAD.r);
  S.hover = f < 0 || f > 1 ? null : { ts: from + f * (to - from) };
  dirty();
}
for (const def of GRAPHS) {
  const c = $('g-' + def.id);
  c.addEventListener('pointermove', (e) => hoverAt(c, e.clientX));
  c.addEventListener('pointerdown', (e) => hoverAt(c, e.clientX));
  c.addEventListener('pointerleave', (e) => { if (e.pointerType === 'mouse') { S.hover = null; dirty(); } });
}
// A tap outside the graphs puts the crosshair away on a touch screen.
document.addEventListener('pointerdown', (e) => { if (S.hover && !(e.target instanceof HTMLCanvasElement)) { S.hover = null; dirty(); } });

// ---- rendering (at most once per animation frame) -----------------------------------------------

// What changed since the last frame: 'sys' (a sample: cards, graphs), 'procs', 'log', 'alerts'
// (what fires changed), 'alerts-late' (fresh values only), 'clock' (a second passed: ages, and
// graphs only when no sample moved them), or everything.
// Streamed changes (a log line, a process list) wait for the next sample's frame, at most a
// second: while live the page draws about one frame a second, not one per message (each frame
// costs a style, layout and paint pass whatever changed).
let framePending = false, deferTimer = 0;
const need = new Set();
function dirty(what = 'all') {
  need.add(what);
  if (framePending) return;
  if ((what === 'log' || what === 'procs' || what === 'alerts-late') && S.conn === 'live' && Date.now() - S.sysAt < 1000) {
    if (!deferTimer) deferTimer = setTimeout(() => { deferTimer = 0; dirty('tick'); }, 1000);
    return;
  }
  clearTimeout(deferTimer); deferTimer = 0;
  framePending = true;
  requestAnimationFrame(() => { framePending = false; render(); });
}

function setText(id, text) { const el = $(id); if (el.textContent !== text) el.textContent = text; }
function show(id, yes) { const el = $(id); if (el.hidden === yes) el.hidden = !yes; }

/** Shows a container's rows: [label, fraction 0-1 or null, value text, level]. The same
 * number of rows as before is updated in place (only what changed is written); a different one
 * is rebuilt. */
function rows(id, items, withMeter) {
  const el = $(id);
  if (el.children.length === items.length) {
    items.forEach(([label, frac, val, lvl], k) => {
      const row = el.children[k];
      const l = row.firstChild, v = row.lastChild;
      if (l.textContent !== label) { l.textContent = label; l.title = label; }
      if (withMeter) {
        const i = row.children[1].firstChild;
        const w = Math.max(0, Math.min(100, (frac || 0) * 100)).toFixed(1) + '%';
        if (i.style.width !== w) i.style.width = w;
        if (i.className !== (lvl || '')) i.className = lvl || '';
      }
      const vc = 'val' + (lvl ? ' ' + lvl : '');
      if (v.className !== vc) v.className = vc;
      if (v.textContent !== val) v.textContent = val;
    });
    return;
  }
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

/** What the board is, for the header: OS, kernel, architecture, CPU model and cores, and the
 * address this page reached it at. Fields the daemon could not read ("unknown") are left out. */
function hostFacts(h) {
  const known = (v) => v && v !== 'unknown';
  const cpu = [known(h.cpu_model) ? h.cpu_model : '', h.cpu_count ? `${h.cpu_count} ${h.cpu_count === 1 ? 'core' : 'cores'}` : '']
    .filter(Boolean).join(', ');
  return [h.os, known(h.kernel) ? `kernel ${h.kernel}` : '', h.arch, cpu, location.host]
    .filter(known).join(' · ');
}

/** The firing alert instances, worst first. */
const SEVERITY = { critical: 0, warning: 1, info: 2 };
function firing() {
  return ((S.alerts && S.alerts.alerts) || []).filter((a) => a.state === 'firing')
    .sort((a, b) => SEVERITY[a.severity] - SEVERITY[b.severity] || a.since - b.since);
}
const firingKey = () => firing().map((a) => a.name + '@' + (a.target || '')).join('|');

/** The tab's title: the host, with the number of firing alerts first (seen in the tab strip,
 * also while the tab is hidden). */
function titleNow() {
  const n = firing().length;
  const t = (n ? `(${n}) ` : '') + (S.host ? `${S.host.hostname} · edgemon` : 'edgemon');
  if (document.title !== t) document.title = t;
}

const fmtValue = (v) => (v === null || v === undefined ? '–' : String(Math.round(v * 100) / 100));

/** The banner (firing alerts) and the alerts card (every rule and its state). */
function renderAlerts() {
  const list = (S.alerts && S.alerts.alerts) || [];
  const on = firing();
  const banner = $('alert-banner');
  show('alert-banner', on.length > 0);
  const worst = on.length ? on[0].severity : '';
  if (banner.className !== worst) banner.className = worst;
  const shown = on.slice(0, 3);
  const bkey = shown.map((a) => [a.name, a.target, a.since, fmtValue(a.value)].join(' ')).join('|') + on.length;
  if (banner.dataset.key !== bkey) {
    banner.dataset.key = bkey;
    banner.replaceChildren(...shown.map((a) => {
      const p = document.createElement('p');
      const sev = document.createElement('span'); sev.className = 'sev ' + a.severity; sev.textContent = a.severity;
      const where = a.target ? ` on ${a.target}` : '';
      p.append(sev, ` ${a.name} firing${where} since ${fmtWhen(a.since, '7d')}: ${fmtValue(a.value)} (${a.rule})`);
      return p;
    }));
    if (on.length > shown.length) {
      const p = document.createElement('p'); p.className = 'dim'; p.textContent = `and ${on.length - shown.length} more (Alerts below)`;
      banner.appendChild(p);
    }
  }
  show('card-alerts', list.length > 0);
  const counts = {};
  for (const a of list) counts[a.state] = (counts[a.state] || 0) + 1;
  setText('alerts-sum', ['firing', 'pending', 'ok', 'unavailable'].filter((k) => counts[k]).map((k) => `${counts[k]} ${k}`).join(' · '));
  // Firing first, then pending, ok, unavailable; each rule's instances together.
  const ORDER = { firing: 0, pending: 1, ok: 2, unavailable: 3 };
  const items = list.slice().sort((a, b) => ORDER[a.state] - ORDER[b.state]);
  const ul = $('alerts');
  const key = items.map((a) => [a.name, a.target, a.state, fmtValue(a.value)].join(' ')).join('|');
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  ul.replaceChildren(...items.map((a) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.textContent = a.name + (a.target ? ` · ${a.target}` : '');
    const st = document.createElement('span');
    st.className = `st ${a.state} ${a.severity}`;
    st.textContent = a.state === 'unavailable' ? 'unavailable' : `${a.state} · ${fmtValue(a.value)}`;
    const rule = document.createElement('span'); rule.className = 'rule';
    rule.textContent = a.state === 'unavailable' ? `${a.rule}: ${a.reason}` : a.rule;
    li.append(name, st, rule);
    return li;
  }));
}

function render() {
  const all = need.has('all'), sys = all || need.has('sys');
  const procs = all || need.has('procs'), logs = all || need.has('log');
  // A second with no sample: the graphs still move on (and show the gap).
  const graphs = sys || (need.has('clock') && Date.now() - S.sysAt > 1500);
  const alerts = all || need.has('alerts') || need.has('alerts-late');
  need.clear();
  if (document.visibilityState !== 'visible') return;
  const d = S.sys;
  if (S.host) {
    setText('host', S.host.hostname);
    setText('sysinfo', hostFacts(S.host));
  }
  titleNow();
  if (alerts) renderAlerts();
  const conn = $('conn');
  if (conn.className !== 'conn ' + S.conn) conn.className = 'conn ' + S.conn;
  setText('conn', S.connText);
  show('retry', S.conn === 'reconnecting');
  show('notice', !!S.notice);
  setText('notice', S.notice);
  const age = S.sysAt ? Math.max(0, Math.round((Date.now() - S.sysAt) / 1000)) : 0;
  setText('age', S.sysAt ? `data ${age} s old` : '');
  // Not live: what is shown is the past, dimmed and aged.
  const stale = !!S.sysAt && (S.conn !== 'live' || Date.now() - S.sysAt > STALE_MS);
  const main = document.querySelector('main');
  if (main.classList.contains('stale') !== stale) main.classList.toggle('stale', stale);
  // A custom property set on <main> restyles all of it: only when the text changes.
  const ageText = stale ? `"${fmtDuration(age)} old"` : '""';
  if (main.style.getPropertyValue('--age') !== ageText) main.style.setProperty('--age', ageText);
  if (all) for (const b of document.querySelectorAll('#ranges button')) b.setAttribute('aria-pressed', String(b.dataset.range === S.range));
  if (d && sys) {
    setText('uptime', d.uptime !== null ? 'up ' + fmtDuration(d.uptime) : '');
    setText('cpu-total', fmtPct(d.cpu.total));
    rows('cores', d.cpu.cores.map((v, i) => [`core ${i}`, v / 100, fmtPct(v), level(v, 70, 90)]), true);
    const freq = d.cpu.freq_mhz ? d.cpu.freq_mhz.reduce((s, f) => s + f, 0) / d.cpu.freq_mhz.length : 0;
    setText('load', (d.load ? `load ${d.load.one.toFixed(2)} (1 min) · ${d.load.five.toFixed(2)} (5 min) · ${d.load.fifteen.toFixed(2)} (15 min)` : '')
      + (freq ? ` · ${Math.round(freq)} MHz` : ''));
    // Where the time went: the shares worth a glance (iowait on an SD card, steal on a VM).
    const b = d.cpu.breakdown;
    setText('cpu-modes', b ? ['user', 'system', 'iowait', 'irq', 'softirq', 'steal']
      .filter((k) => k === 'user' || k === 'system' || b[k] >= 0.1)
      .map((k) => `${k} ${b[k].toFixed(1)} %`).join(' · ') : '');
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
    // I/O per device: what an SD card is asked to write, and how much since boot (its wear).
    rows('disk-io', (d.disk_io || []).map((x) => [x.device, null,
      (x.write_per_s === null ? '' : `W ${fmtBytes(x.write_per_s)}/s R ${fmtBytes(x.read_per_s)}/s · `)
        + `${fmtBytes(x.written_total)} written`, '']), false);
  }
  if (graphs) renderGraphs(d, all);
  if (procs) { renderProcs(); renderServices(); renderContainers(); renderFleet(); }
  if (logs) renderLog();
}

function renderGraphs(d, force) {
  const st = store(S.range);
  const to = Date.now() - skew;
  for (const def of GRAPHS) {
    const any = drawGraph(def, st, to, force);
    // A card with nothing to show (no sensors, no interfaces, no disks) is hidden, not empty.
    if (def.id === 'temp') show('card-temp', any || !!(d && (d.pi || (d.fans && d.fans.length))));
    if (def.id === 'net') show('card-net', any || !!(d && d.network && d.network.length));
    if (def.id === 'disk') show('card-disk', any || !!(d && ((d.disks && d.disks.length) || (d.disk_io && d.disk_io.length))));
  }
  renderEvents(to);
}

function renderEvents(to) {
  const from = to - RANGE[S.range].span;
  const list = S.events.filter((e) => e.ts >= from && e.ts <= to).slice(-8).reverse();
  show('card-events', list.length > 0);
  const key = list.map((e) => e.ts + e.text).join('|') + S.range;
  const ul = $('events');
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  ul.replaceChildren(...list.map((e) => {
    const li = document.createElement('li');
    const t = document.createElement('time'); t.dateTime = new Date(e.ts).toISOString(); t.textContent = fmtWhen(e.ts, '7d');
    const dot = document.createElement('i'); dot.style.background = css(eventColor(e));
    li.append(dot, t, ' ', e.text);
    return li;
  }));
}

function renderTemps(d) {
  const temps = d.temperatures || [];
  const max = temps.length ? Math.max(...temps.map((t) => t.celsius)) : NaN;
  setText('temp-max', Number.isNaN(max) ? (d.temperatures ? 'no sensors' : '–') : max.toFixed(1) + ' °C');
  const el = $('temp-max'), cls = 'big ' + (Number.isNaN(max) ? '' : level(max, 70, 80));
  if (el.className !== cls) el.className = cls;
  rows('temps', temps.map((t) => {
    const hotAt = t.critical ? Math.min(80, t.critical - 10) : 80;
    return [t.label, null, t.celsius.toFixed(1) + ' °C', level(t.celsius, hotAt - 10, hotAt)];
  }), false);
  rows('fans', (d.fans || []).map((f) => [`fan ${f.label}`, null, f.rpm ? `${f.rpm} rpm` : 'stopped', '']), false);
  const SOURCES = {
    mailbox: 'Pi flags from the firmware mailbox',
    hwmon: 'Pi flags from hwmon: under-voltage only (the mailbox drop-in gives the rest; README)',
    sysfs: 'Pi flags from the deprecated get_throttled node',
  };
  setText('pi-source', d.pi ? (SOURCES[d.pi.source] || '') : '');
  const pi = $('pi');
  const key = JSON.stringify(d.pi || null);
  if (pi.dataset.key === key) return;
  pi.dataset.key = key;
  const frag = document.createDocumentFragment();
  if (d.pi) {
    const names = { under_voltage: 'under-voltage', freq_capped: 'frequency capped', throttled: 'throttled', soft_temp_limit: 'soft temp limit' };
    let any = false;
    for (const [k, name] of Object.entries(names)) {
      const f = d.pi[k];
      // `null`: this source cannot read the flag (not "off").
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
  const ifs = d.network || [];
  rows('net', ifs.map((i) => {
    const parts = [i.rx_per_s === null ? '–' : `↓ ${fmtBytes(i.rx_per_s)}/s  ↑ ${fmtBytes(i.tx_per_s)}/s`];
    // Wi-Fi: the signal a person can act on (move the board, the antenna); errors only when any.
    if (i.wifi) parts.push((i.wifi.signal_dbm === null ? '' : `${i.wifi.signal_dbm} dBm `) + `${i.wifi.quality} %`);
    const bad = (i.errors_per_s || 0) + (i.drops_per_s || 0);
    if (bad > 0) parts.push(`${i.errors_per_s} err/s ${i.drops_per_s} drop/s`);
    const weak = i.wifi && i.wifi.signal_dbm !== null && i.wifi.signal_dbm <= -75;
    return [i.name, null, parts.join(' · '), bad > 0 || weak ? 'warn' : ''];
  }), false);
}

/** Failed units first, then the `--unit` ones; hidden without systemd or with nothing to list. */
function renderServices() {
  const s = S.services;
  const failed = (s && s.available && s.failed) || [], units = (s && s.available && s.units) || [];
  show('card-services', failed.length + units.length > 0);
  setText('services-sum', s && s.available ? (s.failed_count ? `${s.failed_count} failed` : 'none failed') : '');
  const key = JSON.stringify([failed, units]);
  const ul = $('services');
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  const item = (u, bad) => {
    const li = document.createElement('li');
    const name = document.createElement('span'); name.textContent = u.unit;
    const st = document.createElement('span');
    st.className = 'st ' + (bad || u.active === 'failed' ? 'firing' : u.active === 'active' ? 'ok' : 'pending');
    st.textContent = `${u.active} (${u.sub})`;
    const more = document.createElement('span'); more.className = 'rule';
    const since = u.since ? ` · since ${fmtWhen(u.since, '7d')}` : '';
    const restarts = u.restarts ? ` · ${u.restarts} restarts` : '';
    more.textContent = (u.load === 'not-found' ? 'no such unit' : u.description) + restarts + since;
    li.append(name, st, more);
    return li;
  };
  ul.replaceChildren(...failed.map((u) => item(u, true)), ...units.map((u) => item(u, false)));
}

/** One row per board, this one first; a peer's name links to its own page. */
function renderFleet() {
  show('card-fleet', S.fleetShown);
  const btn = $('fleet-toggle');
  if (btn.getAttribute('aria-pressed') !== String(S.fleetShown)) btn.setAttribute('aria-pressed', String(S.fleetShown));
  const boards = (S.fleetShown && S.fleet) || [];
  const online = boards.filter((b) => b.state === 'online').length;
  setText('fleet-sum', boards.length ? `${online} of ${boards.length} online` : (S.fleetShown ? 'asking the boards…' : ''));
  const key = JSON.stringify(boards.map((b) => [b.address, b.state, b.reason, b.summary, b.state === 'online' ? 0 : b.last_seen]));
  const tbody = $('fleet').tBodies[0];
  if (tbody.dataset.key === key) return;
  tbody.dataset.key = key;
  tbody.replaceChildren(...boards.map((b) => {
    const s = b.summary || {};
    const tr = document.createElement('tr');
    // A board not online shows its last figures dimmed: they are as it was when last seen.
    if (b.state !== 'online' && b.summary) { tr.className = 'stale'; tr.title = `figures from ${fmtWhen(b.last_seen, '24h')}`; }
    const cell = (text, cls) => { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; };
    const name = cell('');
    if (b.self) name.textContent = `${b.name || 'this board'} (this one)`;
    else {
      const a = document.createElement('a');
      a.href = `${location.protocol}//${b.address}/`;
      a.textContent = b.name ? `${b.name} · ${b.address}` : b.address;
      name.appendChild(a);
      // Found by mDNS rather than configured with --peer: say so (and why it may be locked).
      if (b.discovered) { const t = document.createElement('span'); t.className = 'rule'; t.textContent = ' · found on the LAN'; t.title = 'announced by mDNS; add it with --peer to send it this board\'s token'; name.appendChild(t); }
    }
    const seen = b.state !== 'online' && b.last_seen ? ` · last seen ${fmtWhen(b.last_seen, '24h')}` : '';
    const st = cell(b.state + seen, 'st ' + (b.state === 'online' ? 'ok' : b.state === 'offline' ? 'pending' : 'firing'));
    if (b.reason) st.title = b.reason;
    cell(b.summary ? fmtPct(s.cpu) : '–', 'num');
    cell(b.summary ? fmtPct(s.memory_pct) : '–', 'num');
    cell(missing(s.temp_max) ? '–' : `${s.temp_max.toFixed(1)} °C`, 'num ' + level(s.temp_max, 70, 80));
    cell(s.disk ? `${s.disk.mount} ${s.disk.used_pct.toFixed(0)} %` : '–', s.disk ? level(s.disk.used_pct, 85, 95) : '');
    const pi = s.pi && (s.pi.under_voltage || s.pi.throttled) ? ` · ${s.pi.under_voltage ? 'under-voltage' : 'throttled'}` : '';
    const al = s.alerts && s.alerts.firing ? `${s.alerts.firing} firing (${s.alerts.worst})` : (b.summary ? 'none' : '–');
    cell(al + pi, s.alerts && s.alerts.firing ? 'st firing ' + (s.alerts.worst || '') : '');
    return tr;
  }));
}

/** Running containers first (the daemon's order); hidden when there are none. */
function renderContainers() {
  const c = S.containers;
  const list = (c && c.available && c.containers) || [];
  show('card-containers', list.length > 0);
  const running = list.filter((x) => x.state === 'running').length;
  setText('containers-sum', list.length ? `${running} running of ${c.total}` : '');
  const key = JSON.stringify(list);
  const ul = $('containers');
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  const rate = (io) => (io && !missing(io.in_per_s) ? `${fmtRate(io.in_per_s)} in, ${fmtRate(io.out_per_s)} out` : '');
  ul.replaceChildren(...list.map((x) => {
    const li = document.createElement('li');
    const name = document.createElement('span'); name.textContent = x.name;
    const st = document.createElement('span');
    const bad = x.health === 'unhealthy' || x.state === 'dead' || x.state === 'restarting';
    st.className = 'st ' + (bad ? 'firing' : x.state === 'running' ? 'ok' : 'pending');
    st.textContent = x.health ? `${x.state} (${x.health})` : x.state;
    const more = document.createElement('span'); more.className = 'rule';
    const parts = [x.image];
    if (x.state === 'running') {
      if (!missing(x.cpu)) parts.push(`CPU ${fmtPct(x.cpu)}`);
      if (x.memory) parts.push(`${fmtBytes(x.memory.used)} of ${fmtBytes(x.memory.limit)}`);
      const net = rate(x.net), disk = rate(x.block);
      if (net) parts.push(`net ${net}`);
      if (disk) parts.push(`disk ${disk.replace(' in', ' read').replace(' out', ' written')}`);
      if (!missing(x.uptime_s)) parts.push(`up ${fmtDuration(x.uptime_s)}`);
    } else parts.push(x.status);
    if (x.restarts) parts.push(`${x.restarts} restarts`);
    more.textContent = parts.join(' · ');
    li.append(name, st, more);
    if (x.logs) {
      // Its log in the logs card below.
      const b = document.createElement('button');
      b.type = 'button'; b.className = 'link'; b.textContent = 'log';
      b.setAttribute('aria-label', `log of ${x.name}`);
      b.addEventListener('click', () => { pickLog(x.logs); $('card-logs').scrollIntoView({ block: 'nearest' }); });
      more.append(' · ', b);
    }
    return li;
  }));
}

const PROC_CELLS = ['num', '', '', 'cmd', 'num', 'num', 'state'];
function renderProcs() {
  const procs = S.procs.slice().sort((a, b) => (S.sort === 'rss' ? b.rss - a.rss : b.cpu - a.cpu || b.rss - a.rss));
  const tbody = $('procs').tBodies[0];
  // Rows are reused: a cell is written only when its text changed.
  while (tbody.rows.length > procs.length) tbody.lastChild.remove();
  procs.forEach((p, k) => {
    let tr = tbody.rows[k];
    if (!tr) {
      tr = document.createElement('tr');
      for (const cls of PROC_CELLS) { const td = document.createElement('td'); if (cls) td.className = cls; tr.appendChild(td); }
      tbody.appendChild(tr);
    }
    [p.pid, p.user, p.name, p.cmd, p.cpu.toFixed(1), fmtBytes(p.rss), p.state].forEach((v, i) => {
      const td = tr.cells[i], t = String(v);
      if (td.textContent !== t) { td.textContent = t; td.title = t; }
    });
  });
  // Who writes to the disk, whatever their CPU.
  const w = S.writers;
  show('writers', w.length > 0);
  setText('writers', w.length ? 'Writing to disk: ' + w.map((p) => `${p.name} (${p.pid}) ${fmtBytes(p.write_per_s)}/s`).join(' · ')
    + (S.ioReadable === 'own' ? ' (other users\' processes need root to be seen)' : '') : '');
  for (const th of document.querySelectorAll('th.sort')) {
    const on = th.dataset.sort === S.sort;
    th.classList.toggle('sorted', on);
    if (th.getAttribute('aria-sort') !== (on ? 'descending' : 'none')) th.setAttribute('aria-sort', on ? 'descending' : 'none');
  }
}

let logAtBottom = true;
$('log').addEventListener('scroll', (e) => {
  const pre = e.target;
  logAtBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30;
}, { passive: true });

/** What the log view holds: its topic and filter, and the id of its newest line. */
let view = { topic: null, filter: null, last: 0 };

/** Shows new lines by appending them (a text selection survives, the view is not rebuilt); a
 * new topic, filter or clear rebuilds it. Paused, nothing is appended, but filter and clear
 * still act on what is shown. */
function renderLog() {
  const log = S.logs.get(S.logTopic);
  const lines = log ? log.lines : [];
  const f = S.filter.toLowerCase();
  const upTo = S.follow ? Infinity : S.pausedAt;
  if (S.follow) setText('log-status', '');
  else {
    const pending = lines.filter((l) => l.id > S.pausedAt).length;
    setText('log-status', pending ? `paused · ${pending} new line(s)` : 'paused');
  }
  const pre = $('log');
  const match = (l) => l.id <= upTo && (!f || l.t.toLowerCase().includes(f));
  let add;
  if (view.topic !== S.logTopic || view.filter !== f) {
    pre.replaceChildren();
    add = lines.filter(match).slice(-LOG_SHOW);
  } else {
    add = [];
    for (let i = lines.length - 1; i >= 0 && lines[i].id > view.last; i--) if (match(lines[i])) add.push(lines[i]);
    add.reverse();
  }
  view = { topic: S.logTopic, filter: f, last: Math.max(view.topic === S.logTopic ? view.last : 0, ...add.map((l) => l.id)) };
  if (!add.length) return;
  const frag = document.createDocumentFragment();
  for (const l of add) {
    const s = document.createElement('span');
    if (l.cls) s.className = l.cls;
    s.textContent = l.t + '\n';
    frag.appendChild(s);
  }
  pre.appendChild(frag);
  for (let extra = pre.childNodes.length - LOG_SHOW; extra > 0; extra--) pre.firstChild.remove();
  // Kept at the bottom only if the reader was there (known from scroll events, so reading it
  // forces no layout); a reader scrolled up keeps their place.
  if (logAtBottom) pre.scrollTop = pre.scrollHeight;
}

// ---- controls ------------------------------------------------------------------------------------

for (const th of document.querySelectorAll('th.sort')) {
  const pick = () => { S.sort = th.dataset.sort; dirty(); };
  th.addEventListener('click', pick);
  th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
}
for (const b of document.querySelectorAll('#ranges button')) {
  b.addEventListener('click', () => {
    S.range = b.dataset.range;
    try { localStorage.setItem('edgemon.range', S.range); } catch (_) { /* storage off */ }
    S.hover = null;
    requestRange();
    if (Date.now() - S.eventsAt > 5000) loadEvents();
    dirty();
  });
}
$('retry').addEventListener('click', retryNow);
$('fleet-toggle').addEventListener('click', () => {
  S.fleetShown = !S.fleetShown;
  try { localStorage.setItem('edgemon.fleet', S.fleetShown ? '1' : '0'); } catch (_) { /* storage off */ }
  if (!S.fleetShown) S.fleet = null;
  syncSubscriptions();
  // A click answers at once (frames' 'procs' renders wait for the next sample).
  dirty();
});
$('log-source').addEventListener('change', (e) => { S.logTopic = e.target.value; syncSubscriptions(); dirty(); });
/** Shows log `topic` in the logs card (a container's log may not be in the picker yet). */
function pickLog(topic) {
  const sel = $('log-source');
  if (![...sel.options].some((o) => o.value === topic)) {
    const o = document.createElement('option'); o.value = topic; o.textContent = topic.slice(5); sel.appendChild(o);
  }
  sel.value = topic;
  S.logTopic = topic;
  syncSubscriptions();
  dirty();
}
$('log-follow').addEventListener('click', () => {
  S.follow = !S.follow;
  $('log-follow').textContent = S.follow ? 'Pause' : 'Follow';
  $('log-follow').setAttribute('aria-pressed', String(!S.follow));
  const log = S.logs.get(S.logTopic);
  if (!S.follow) S.pausedAt = log ? log.nextId : 0;
  dirty();
});
$('log-filter').addEventListener('input', (e) => { S.filter = e.target.value; dirty(); });
$('log-clear').addEventListener('click', () => {
  // The lines go; the position stays, so a resubscribe still resumes after the last one.
  const log = S.logs.get(S.logTopic);
  if (log) log.lines = [];
  view.topic = null;
  dirty();
});

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

// The graphs and the age shown in the header move on even when no frame arrives.
setInterval(() => {
  // Fresh samples redraw by themselves; the clock only moves a page that stopped getting them.
  if (S.sysAt && Date.now() - S.sysAt > 1500) dirty('clock');
  if (ws && document.visibilityState === 'visible' && Date.now() - S.eventsAt > EVENTS_EVERY_MS) loadEvents();
}, 1000);
window.addEventListener('resize', dirty);
loadSources();
connect();
