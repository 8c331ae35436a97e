// The Node page: counts, disk usage by kind, retention, background errors,
// forwarders, verify, and append and read rates sampled from /metrics by
// this page while it is open.

import { api, metricsText } from './api.js';
import { h, mount, num, bytes, toast, errorBox } from './dom.js';
import { can } from './session.js';

const SAMPLE_MS = 2000;
const SAMPLES = 150; // five minutes

/** Sums of the Prometheus samples named `name` (any labels). */
export function metricSum(text, name) {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) { sum += v; found = true; }
  }
  return found ? sum : null;
}

/** A line chart of `values` (per second), as SVG. */
function chart(values, label) {
  const w = 600, ht = 120, pad = 4;
  const max = Math.max(1, ...values);
  const step = (w - 2 * pad) / (SAMPLES - 1);
  const x0 = w - pad - (values.length - 1) * step;
  const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(ht - pad - (v / max) * (ht - 2 * pad)).toFixed(1)}`).join(' ');
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${ht}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${label}: last ${values.length} samples, peak ${max.toFixed(1)} per second`);
  for (const y of [pad, ht / 2, ht - pad]) {
    const l = document.createElementNS(ns, 'line');
    Object.entries({ x1: 0, x2: w, y1: y, y2: y, class: 'grid' }).forEach(([k, v]) => l.setAttribute(k, v));
    svg.append(l);
  }
  if (values.length > 1) {
    const p = document.createElementNS(ns, 'polyline');
    p.setAttribute('points', pts);
    p.setAttribute('class', 'line');
    svg.append(p);
  }
  return h('figure', { class: 'chart-box' },
    h('figcaption', {}, label, ' ', h('strong', {}, `${(values[values.length - 1] ?? 0).toFixed(1)}/s`),
      h('span', { class: 'muted' }, values.length ? ` · peak ${Math.max(...values).toFixed(1)}/s over ${Math.round(values.length * SAMPLE_MS / 1000)} s` : ' · sampling /metrics every 2 s')),
    svg);
}

// Samples survive leaving and coming back to the page within the tab.
const history = { appends: [], reads: [], last: null };

export async function nodePage(main, { onLeave }) {
  const summary = h('div', { class: 'cards', id: 'node-summary' });
  const charts = h('div', { class: 'charts', id: 'node-charts' });
  const forwarders = h('div', { id: 'forwarders' });
  const verifyOut = h('div', { id: 'verify-result' });
  let verifying = false;
  const verifyBtn = h('button', {
    type: 'button', class: 'primary', id: 'verify',
    ...(can('admin') ? {} : { disabled: true, title: 'Needs a token with the admin role' }),
    onclick: async () => {
      verifyBtn.disabled = true; verifying = true;
      mount(verifyOut, h('p', { class: 'muted' }, 'Verifying every segment and index…'));
      try {
        showVerify(await api('/admin/verify', { method: 'POST' }));
      } catch (e) { mount(verifyOut, errorBox(e)); toast(e.message, 'error'); }
      verifyBtn.disabled = false; verifying = false;
    },
  }, 'Run verify');
  /** A verify answer (this page's run, or the server's last one from /node). */
  function showVerify(r) {
    mount(verifyOut, h('div', { class: r.clean ? 'ok' : 'error' },
      h('strong', {}, r.clean ? 'Clean' : `${r.problems.length} problems`),
      `: ${num(r.segments)} segments, ${num(r.indexes)} indexes, ${num(r.events)} events, ${bytes(r.bytes)} checked at ${new Date(r.finished_ms).toLocaleString()}`,
      r.problems.length ? h('ul', {}, r.problems.map(p => h('li', {}, p))) : ''));
  }
  mount(main, h('h1', {}, 'Node'), summary,
    h('h2', {}, 'Rates'), charts,
    h('h2', {}, 'Forwarders'), forwarders,
    h('h2', {}, 'Verify'), h('p', {}, verifyBtn, ' ', h('span', { class: 'muted' }, 'reads every segment and index file and checks every checksum (admin).')), verifyOut);

  async function loadSummary() {
    const n = await api('/node');
    if (n.last_verify && !verifying) showVerify(n.last_verify);
    else if (!n.last_verify && !verifyOut.firstChild) mount(verifyOut, h('p', { class: 'muted', id: 'verify-none' }, 'No verify has run since the server started.'));
    const d = n.disk;
    const total = d.segment_file_bytes + d.index_file_bytes + d.other_bytes;
    const bar = (part, cls) => h('span', { class: 'bar-part ' + cls, style: undefined, dataset: { w: total ? (100 * part / total).toFixed(1) : 0 } });
    const diskBar = h('div', { class: 'bar', role: 'img', 'aria-label': 'disk usage by kind' },
      bar(d.segment_file_bytes, 'seg'), bar(d.index_file_bytes, 'idx'), bar(d.other_bytes, 'oth'));
    // Widths set from script: the content security policy forbids inline style attributes.
    for (const p of diskBar.children) p.style.width = p.dataset.w + '%';
    const r = n.retention;
    mount(summary,
      h('div', { class: 'card' }, h('h2', {}, 'Store'), h('dl', { class: 'kv' },
        h('dt', {}, 'events'), h('dd', { id: 'node-events' }, num(n.events)),
        h('dt', {}, 'streams'), h('dd', { id: 'node-streams' }, num(n.streams)),
        h('dt', {}, 'segments'), h('dd', {}, num(n.segments), h('span', { class: 'muted' }, ` (${num(n.compressed_segments)} compressed)`)),
        h('dt', {}, 'active segment'), h('dd', {}, `${num(n.active_events)} events`),
        h('dt', {}, 'appends'), h('dd', {}, n.write_failure ? h('span', { class: 'badge warn' }, n.write_failure) : h('span', { class: 'badge good' }, 'accepted')))),
      h('div', { class: 'card' }, h('h2', {}, 'Disk'), diskBar, h('dl', { class: 'kv' },
        h('dt', {}, h('span', { class: 'key seg' }), 'segments'), h('dd', { id: 'disk-segments' }, bytes(d.segment_bytes), h('span', { class: 'muted', title: 'the active segment is preallocated' }, ` written, ${bytes(d.segment_file_bytes)} on disk`)),
        h('dt', {}, 'compression'), h('dd', { id: 'disk-compression' }, compression(d)),
        h('dt', {}, h('span', { class: 'key idx' }), 'indexes'), h('dd', {}, bytes(d.index_file_bytes)),
        h('dt', {}, h('span', { class: 'key oth' }), 'side files'), h('dd', {}, bytes(d.other_bytes)),
        h('dt', {}, 'files'), h('dd', {}, num(d.files)),
        h('dt', {}, 'free on the disk'), h('dd', {}, bytes(d.available_bytes)))),
      h('div', { class: 'card' }, h('h2', {}, 'Retention'), h('dl', { class: 'kv' },
        h('dt', {}, 'disk budget'), h('dd', {}, r.max_bytes ? bytes(r.max_bytes) : 'none'),
        h('dt', {}, 'held for forwarders'), h('dd', {}, bytes(r.held_bytes)),
        r.held_by.length ? [h('dt', {}, 'holds'), h('dd', {}, r.held_by.map(([name, p]) => `${name} from ${num(p)}`).join(', '))] : '',
        r.appends_stopped ? [h('dt', {}, 'appends'), h('dd', {}, h('span', { class: 'badge warn' }, 'stopped for the budget'))] : '')),
      h('div', { class: 'card' }, h('h2', {}, 'Background'),
        n.last_background_error ? h('p', { class: 'error', id: 'bg-error' }, n.last_background_error) : h('p', { class: 'muted', id: 'bg-error' }, 'No compression or scavenging error since the store opened.')));
  }

  async function loadForwarders() {
    const r = await api('/forward');
    mount(forwarders, r.forwarders.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
      h('thead', {}, h('tr', {}, ['Forwarder', 'State', 'Checkpoint', 'Lag (events)', 'Lag (s)', 'Failures', 'Last error'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, r.forwarders.map(f => h('tr', {},
        h('td', {}, f.name), h('td', {}, f.state), h('td', { class: 'n' }, num(f.checkpoint)),
        h('td', { class: 'n' }, num(f.lag_events)), h('td', { class: 'n' }, f.lag_seconds ?? '–'),
        h('td', { class: 'n' }, num(f.failures)), h('td', { class: 'small-text' }, f.last_error || '')))))) : h('p', { class: 'muted' }, 'No forwarders configured ([[forward]] in annal.toml).'));
  }

  async function sample() {
    let text;
    try { text = await metricsText(); } catch (e) { mount(charts, errorBox(e)); return; }
    const now = performance.now();
    const cur = { t: now, appends: metricSum(text, 'annal_events_appended_total') ?? 0, reads: metricSum(text, 'annal_read_seconds_count') ?? 0 };
    if (history.last && now > history.last.t) {
      const dt = (now - history.last.t) / 1000;
      history.appends.push(Math.max(0, (cur.appends - history.last.appends) / dt));
      history.reads.push(Math.max(0, (cur.reads - history.last.reads) / dt));
      if (history.appends.length > SAMPLES) { history.appends.shift(); history.reads.shift(); }
    }
    history.last = cur;
    mount(charts, chart(history.appends, 'Events appended'), chart(history.reads, 'Reads'));
  }

  await Promise.all([loadSummary(), loadForwarders().catch(e => mount(forwarders, errorBox(e))), sample()]);
  const timer = setInterval(() => { sample(); }, SAMPLE_MS);
  const slow = setInterval(() => { loadSummary().catch(() => {}); loadForwarders().catch(() => {}); }, 10 * SAMPLE_MS);
  onLeave(() => { clearInterval(timer); clearInterval(slow); });
}

/** The segments' compression ratio: their uncompressed bytes over the bytes they take. */
function compression(d) {
  if (!d.segment_bytes || d.uncompressed_segment_bytes <= d.segment_bytes) return 'none';
  return `${(d.uncompressed_segment_bytes / d.segment_bytes).toFixed(2)}x (${bytes(d.uncompressed_segment_bytes)} uncompressed)`;
}
