// The Streams, Stream, Log and Groups pages.

import { api, apiVersioned, enc, follow, qs, ApiError } from './api.js';
import { h, mount, num, time, jsonBlock, copyButton, toast, field, errorBox } from './dom.js';
import { can, link } from './session.js';

const PAGE = 50;

/** Writes the page's parameters into the address without reloading it. */
function setParams(base, params) {
  const target = link(base, params);
  if (location.hash !== target) history.replaceState(null, '', target);
}

function debounce(f, ms) {
  let t = 0;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

function needs(role) {
  return can(role) ? {} : { disabled: true, title: `Needs a token with the ${role} role` };
}

// ---------------------------------------------------------------- Streams

export async function streamsPage(main, { params }) {
  const state = {
    search: params.get('search') || '',
    category: params.get('category') || '',
    system: params.get('system') === '1',
    after: params.get('after') || '',
    size: [20, 50, 100, 200].includes(Number(params.get('size'))) ? Number(params.get('size')) : PAGE,
    // The cursors of the pages before this one, for "Previous".
    back: [],
  };
  const search = h('input', { type: 'search', id: 'stream-search', placeholder: 'Search streams (press /)', value: state.search, 'aria-label': 'Search streams' });
  const category = h('select', { id: 'stream-category', 'aria-label': 'Category' }, h('option', { value: '' }, 'All categories'));
  const system = h('input', { type: 'checkbox', id: 'stream-system', checked: state.system });
  const size = h('select', { id: 'page-size', 'aria-label': 'Streams per page' },
    [20, 50, 100, 200].map(n => h('option', { value: n, selected: n === state.size }, `${n} a page`)));
  const summary = h('p', { class: 'muted', id: 'streams-summary' });
  const table = h('div', { class: 'table-wrap' });
  const pager = h('div', { class: 'pager' });
  mount(main,
    h('h1', {}, 'Streams'),
    h('div', { class: 'toolbar' }, search, category, size, h('label', { class: 'check' }, system, 'system streams')),
    summary, table, pager);

  async function loadCategories() {
    const r = await api('/browse/categories' + qs({ search: state.search, include_system: state.system || undefined }));
    mount(category, h('option', { value: '' }, `All categories (${num(r.total)})`),
      r.categories.map(c => h('option', { value: c.category, selected: c.category === state.category }, `${c.category}-* (${num(c.streams)})`)));
    if (state.category && !r.categories.some(c => c.category === state.category)) {
      category.append(h('option', { value: state.category, selected: true }, `${state.category}-*`));
    }
  }

  async function load() {
    setParams(['streams'], { search: state.search, category: state.category, system: state.system ? '1' : '', size: state.size === PAGE ? '' : state.size, after: state.after });
    const r = await api('/browse/streams' + qs({
      search: state.search, category: state.category, include_system: state.system || undefined, after: state.after, limit: state.size,
    }));
    summary.textContent = `${num(r.matched)} streams${state.search ? ` matching “${state.search}”` : ''}${state.category ? ` in ${state.category}-*` : ''}`;
    if (!r.streams.length) {
      mount(table, h('p', { class: 'empty' }, 'No streams.'));
    } else {
      mount(table, h('table', { class: 'list', id: 'streams-table' },
        h('thead', {}, h('tr', {}, ['Stream', 'Category', 'Revision', 'Events', 'Last write', 'Metadata'].map(t => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, r.streams.map(s => h('tr', { dataset: { stream: s.stream } },
          h('td', {}, h('a', { href: link(['stream', s.stream]) }, s.stream), s.deleted ? h('span', { class: 'badge warn' }, s.deleted === 'hard' ? 'hard-deleted' : 'deleted') : ''),
          h('td', {}, h('a', { href: link(['streams'], { category: s.category }), class: 'muted' }, s.category)),
          h('td', { class: 'n' }, num(s.last_revision)),
          h('td', { class: 'n' }, num(s.event_count)),
          h('td', {}, time(s.last_write)),
          h('td', { class: 'small-text' }, metaSummary(s.metadata)))))));
    }
    const go = (after) => { state.after = after; load().catch(e => mount(table, errorBox(e))); };
    mount(pager,
      state.after ? h('button', { type: 'button', onclick: () => { state.back = []; go(''); } }, '« First page') : '',
      state.back.length ? h('button', { type: 'button', id: 'streams-prev', onclick: () => go(state.back.pop()) }, '‹ Previous') : '',
      r.next ? h('button', { type: 'button', id: 'streams-next', onclick: () => { state.back.push(state.after); go(r.next); } }, 'Next page ›') : '');
  }

  const reload = debounce(async () => {
    state.after = '';
    state.back = [];
    try { await Promise.all([load(), loadCategories()]); } catch (e) { mount(table, errorBox(e)); }
  }, 200);
  search.addEventListener('input', () => { state.search = search.value.trim(); reload(); });
  category.addEventListener('change', () => { state.category = category.value; state.after = ''; state.back = []; load().catch(e => mount(table, errorBox(e))); });
  system.addEventListener('change', () => { state.system = system.checked; reload(); });
  size.addEventListener('change', () => { state.size = Number(size.value); reload(); });
  await Promise.all([load(), loadCategories()]);
}

function metaSummary(m) {
  if (!m) return '';
  const parts = [];
  if (m.max_age_ms !== undefined) parts.push(`max age ${num(m.max_age_ms)} ms`);
  if (m.max_count !== undefined) parts.push(`max count ${num(m.max_count)}`);
  if (m.truncate_before !== undefined) parts.push(`truncated before ${num(m.truncate_before)}`);
  if (m.custom && Object.keys(m.custom).length) parts.push(`${Object.keys(m.custom).length} custom`);
  return parts.join(' · ');
}

// ---------------------------------------------------------------- Events

const CORRELATION = ['$correlationId', 'correlationId', 'correlation_id'];
const CAUSATION = ['$causationId', 'causationId', 'causation_id'];

function pick(obj, keys) {
  return pickKey(obj, keys)?.[1];
}

/** The first of `keys` that `obj` holds as a string, with its value. */
function pickKey(obj, keys) {
  if (!obj || typeof obj !== 'object') return undefined;
  for (const k of keys) if (typeof obj[k] === 'string') return [k, obj[k]];
  return undefined;
}

/** One event as a collapsible card; `showStream` for the log. */
function eventCard(e, { showStream, correlated } = {}) {
  const corrKey = pickKey(e.metadata, CORRELATION);
  const corr = corrKey?.[1];
  const cause = pick(e.metadata, CAUSATION);
  const same = corr && correlated ? correlated.get(corr) : null;
  const body = h('div', { class: 'ev-body' },
    h('dl', { class: 'kv' },
      h('dt', {}, 'id'), h('dd', {}, h('code', {}, e.id), ' ', copyButton(e.id)),
      h('dt', {}, 'stream'), h('dd', {}, h('a', { href: link(['stream', e.stream], { from: e.revision }) }, e.stream), ' ', copyButton(e.stream)),
      h('dt', {}, 'time'), h('dd', {}, e.timestamp),
      corr ? [h('dt', {}, 'correlation'), h('dd', {}, h('code', {}, corr), ' ',
        // Every event of the correlation, across streams and pages: the log filtered by the metadata field.
        h('a', { class: 'corr-all', href: link(['log'], { metadata: `${corrKey[0]}=${corr}`, dir: 'forward' }) }, 'all in the log'),
        same && same.length > 1 ? [' ', h('span', { class: 'muted' }, `${same.length} events on this page: `),
          same.filter(x => x.position !== e.position).map(x => h('a', { href: '#', class: 'corr-link', onclick: (ev) => { ev.preventDefault(); jumpTo(x.position); } }, `@${x.position}`)).flatMap((a, i) => (i ? [', ', a] : [a]))] : '')] : '',
      cause ? [h('dt', {}, 'causation'), h('dd', {}, h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); openEvent(cause); } }, cause))] : '',
      e.retry_count !== undefined ? [h('dt', {}, 'retries'), h('dd', {}, e.retry_count)] : ''),
    h('h3', {}, 'Data'), jsonBlock(e.data, e.data_base64),
    (e.metadata !== undefined && !(e.metadata && typeof e.metadata === 'object' && !Object.keys(e.metadata).length)) || e.metadata_base64
      ? [h('h3', {}, 'Metadata'), jsonBlock(e.metadata, e.metadata_base64)] : '');
  return h('details', { class: showStream ? 'event in-log' : 'event', id: `ev-${e.position}`, dataset: { position: e.position, type: e.type } },
    h('summary', {},
      showStream ? '' : h('span', { class: 'rev', title: 'revision' }, `#${e.revision}`),
      h('span', { class: 'pos muted', title: 'position' }, `@${e.position}`),
      showStream ? h('span', { class: 'ev-stream', title: `${e.stream} revision ${e.revision}` }, `${e.stream} #${e.revision}`) : '',
      h('span', { class: 'type' }, e.type),
      h('span', { class: 'tags' }, (e.tags || []).map(t => h('span', { class: 'tag' }, t))),
      h('span', { class: 'when' }, time(e.timestamp))),
    body);
}

function jumpTo(position) {
  const el = document.getElementById(`ev-${position}`);
  if (!el) return;
  el.open = true;
  el.scrollIntoView({ block: 'center' });
  el.querySelector('summary').focus();
}

async function openEvent(id) {
  try {
    const e = await api('/events/' + enc(id));
    location.hash = link(['stream', e.stream], { from: e.revision, dir: 'forward' });
  } catch (err) {
    toast(err instanceof ApiError && err.status === 404 ? `No event has id ${id}` : err.message, 'error');
  }
}

function correlations(events) {
  const m = new Map();
  for (const e of events) {
    const c = pick(e.metadata, CORRELATION);
    if (c) { if (!m.has(c)) m.set(c, []); m.get(c).push(e); }
  }
  return m;
}

// ---------------------------------------------------------------- Stream

export async function streamPage(main, name, { params }) {
  const state = { dir: params.get('dir') || 'backward', from: params.get('from') || '' };
  const info = h('div', { class: 'stream-info' });
  const list = h('div', { class: 'events', id: 'stream-events' });
  const pager = h('div', { class: 'pager' });
  const jump = h('input', { type: 'number', min: 0, id: 'jump', placeholder: 'revision', 'aria-label': 'Jump to revision', value: state.from });
  const dirSel = h('select', { id: 'direction', 'aria-label': 'Order' },
    h('option', { value: 'backward', selected: state.dir === 'backward' }, 'Newest first'),
    h('option', { value: 'forward', selected: state.dir === 'forward' }, 'Oldest first'));
  const meta = h('div', { class: 'meta-editor' });
  mount(main,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/streams' }, 'Streams'), ' / '),
    h('h1', { class: 'stream-name' }, name, ' ', copyButton(name, 'Copy name')),
    info,
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); state.from = jump.value; load(); } },
      dirSel, field('Jump to revision', jump), h('button', { type: 'submit' }, 'Go'),
      h('button', { type: 'button', onclick: () => { state.from = ''; jump.value = ''; load(); } }, state.dir === 'backward' ? 'Latest' : 'First')),
    list, pager, meta);
  dirSel.addEventListener('change', () => { state.dir = dirSel.value; state.from = ''; jump.value = ''; load(); });

  async function load() {
    setParams(['stream', name], { dir: state.dir === 'backward' ? '' : state.dir, from: state.from });
    let r;
    try {
      r = await api(`/streams/${enc(name)}` + qs({ direction: state.dir, from: state.from === '' ? (state.dir === 'backward' ? 'end' : 'start') : state.from, limit: PAGE }));
    } catch (e) {
      mount(list, errorBox(e));
      mount(pager);
      return;
    }
    const events = r.events;
    const corr = correlations(events);
    mount(list, events.length ? events.map(e => eventCard(e, { correlated: corr })) : h('p', { class: 'empty' }, 'No events here.'));
    const last = events[events.length - 1];
    const first = events[0];
    const step = (to) => () => { state.from = String(to); jump.value = state.from; load(); };
    mount(pager,
      first && state.from !== '' ? h('button', { type: 'button', onclick: step(state.dir === 'backward' ? first.revision + PAGE : Math.max(0, first.revision - PAGE)) }, state.dir === 'backward' ? '« Newer' : '« Older') : '',
      last && events.length === PAGE && (state.dir === 'forward' || last.revision > 0)
        ? h('button', { type: 'button', id: 'stream-next', onclick: step(state.dir === 'backward' ? last.revision - 1 : last.revision + 1) }, state.dir === 'backward' ? 'Older »' : 'Newer »') : '');
  }

  async function loadInfo() {
    // The last event says the revision and last write in one read; a stream
    // with none to read (deleted, truncated) is looked up by name instead.
    let s = null;
    const last = await api(`/streams/${enc(name)}` + qs({ direction: 'backward', from: 'end', limit: 1 })).catch(() => null);
    const m = last?.events?.length ? await api(`/streams/${enc(name)}/metadata`).catch(() => null) : null;
    if (m) {
      const e = last.events[0];
      s = { last_revision: e.revision, event_count: e.revision + 1 - (m.truncate_before || 0), last_write: e.timestamp, deleted: null };
    } else {
      const r = await api('/browse/streams' + qs({ prefix: name, include_system: name.startsWith('$') || undefined, limit: 1 }));
      s = r.streams.find(x => x.stream === name);
    }
    if (!s) { mount(info, h('p', { class: 'muted' }, 'No such stream yet.')); return; }
    mount(info, h('dl', { class: 'kv inline' },
      h('dt', {}, 'revision'), h('dd', { id: 'stream-revision' }, num(s.last_revision)),
      h('dt', {}, 'events'), h('dd', {}, num(s.event_count)),
      h('dt', {}, 'last write'), h('dd', {}, time(s.last_write)),
      s.deleted ? [h('dt', {}, 'state'), h('dd', {}, h('span', { class: 'badge warn' }, s.deleted === 'hard' ? 'hard-deleted' : 'deleted'))] : ''));
    metadataEditor(meta, name);
  }

  await Promise.all([load(), loadInfo()]);
}

/** Max age and max count of a stream, saved only if nobody changed them since they were shown. */
async function metadataEditor(el, name) {
  let loaded, version;
  try { ({ json: loaded, version } = await apiVersioned(`/streams/${enc(name)}/metadata`)); } catch (e) { mount(el, errorBox(e)); return; }
  const maxAge = h('input', { type: 'number', min: 1, id: 'meta-max-age', value: loaded.max_age_ms ?? '', placeholder: 'none' });
  const maxCount = h('input', { type: 'number', min: 1, id: 'meta-max-count', value: loaded.max_count ?? '', placeholder: 'none' });
  const shown = h('span', { class: 'muted small-text', id: 'meta-version' });
  const showVersion = () => { shown.textContent = ` saved only over metadata version ${version}, as shown`; };
  showVersion();
  const ro = !can('write');
  if (ro) { maxAge.disabled = true; maxCount.disabled = true; }
  mount(el, h('form', {
    class: 'card', id: 'meta-form', onsubmit: async (e) => {
      e.preventDefault();
      try {
        const next = { ...loaded };
        delete next.max_age_ms; delete next.max_count;
        if (maxAge.value) next.max_age_ms = Number(maxAge.value);
        if (maxCount.value) next.max_count = Number(maxCount.value);
        // The server checks the version atomically with the write: an edit
        // made by someone else since this form loaded is never overwritten.
        ({ json: loaded, version } = await apiVersioned(
          `/streams/${enc(name)}/metadata${qs({ expected: version })}`, { method: 'PUT', body: next }));
        showVersion();
        toast('Metadata saved');
      } catch (err) {
        if (err.code === 'wrong_expected_version') toast('The metadata changed since this page showed it; reload to see it', 'error');
        else toast(err.message, 'error');
      }
    },
  },
  h('h2', {}, 'Stream metadata'),
  h('div', { class: 'row' }, field('Max age (ms)', maxAge), field('Max count', maxCount)),
  loaded.truncate_before !== undefined ? h('p', { class: 'muted' }, `Events before revision ${num(loaded.truncate_before)} are truncated.`) : '',
  loaded.custom && Object.keys(loaded.custom).length ? [h('h3', {}, 'Custom'), jsonBlock(loaded.custom)] : '',
  h('button', { type: 'submit', class: 'primary', ...needs('write') }, 'Save'),
  shown));
}

// ---------------------------------------------------------------- Log

const LIVE_MAX = 500;
/** The Log page's filters behind "More filters", kept in the page's address as the others are. */
const MORE_FILTERS = ['type_pattern', 'stream_pattern', 'aggregate_type', 'aggregate_id', 'metadata'];

/** Comma-separated values, trimmed, empty ones left out (undefined when none). */
function csv(v) {
  const items = (v || '').split(',').map(x => x.trim()).filter(Boolean);
  return items.length ? items : undefined;
}

/** `actor=agent-7, tenant=t1` as the API's `metadata.actor=agent-7&metadata.tenant=t1`. */
function metadataParams(v) {
  const out = {};
  for (const item of csv(v) || []) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const key = 'metadata.' + item.slice(0, eq).trim();
    (out[key] ||= []).push(item.slice(eq + 1).trim());
  }
  return out;
}

export async function logPage(main, { params, onLeave }) {
  const f = {
    type: params.get('type') || '', tag: params.get('tag') || '', stream_prefix: params.get('stream_prefix') || '',
    since: params.get('since') || '', until: params.get('until') || '', from: params.get('from') || '', dir: params.get('dir') || 'backward',
  };
  for (const k of MORE_FILTERS) f[k] = params.get(k) || '';
  const input = (k, label, ph) => h('input', { type: 'search', id: `log-${k}`, value: f[k], placeholder: ph, 'aria-label': label });
  const type = input('type', 'Event types', 'types, comma-separated');
  const tag = input('tag', 'Tags', 'tags, comma-separated (all must match)');
  const prefix = input('stream_prefix', 'Stream prefix', 'stream prefix');
  const more = {
    type_pattern: input('type_pattern', 'Type patterns', 'type patterns: order.*, app.#'),
    stream_pattern: input('stream_pattern', 'Stream patterns', 'stream patterns: tenant.*.orders'),
    aggregate_type: input('aggregate_type', 'Aggregate type', 'aggregate type: order'),
    aggregate_id: input('aggregate_id', 'Aggregate id', 'aggregate id: 42'),
    metadata: input('metadata', 'Metadata fields', 'metadata: actor=agent-7, tenant=t1'),
  };
  const moreBox = h('details', { class: 'more-filters', id: 'log-more', open: MORE_FILTERS.some(k => f[k]) },
    h('summary', {}, 'More filters'), ...Object.values(more));
  const since = h('input', { type: 'datetime-local', step: 1, id: 'log-since', 'aria-label': 'Since', value: localInput(f.since) });
  const until = h('input', { type: 'datetime-local', step: 1, id: 'log-until', 'aria-label': 'Until', value: localInput(f.until) });
  const list = h('div', { class: 'events', id: 'log-events' });
  const pager = h('div', { class: 'pager' });
  const liveBtn = h('button', { type: 'button', id: 'live', 'aria-pressed': 'false' }, 'Live tail');
  const pauseBtn = h('button', { type: 'button', id: 'pause', hidden: true }, 'Pause');
  const rate = h('span', { class: 'rate', id: 'rate', 'aria-live': 'off' });
  mount(main,
    h('h1', {}, 'Log'),
    h('form', { class: 'toolbar filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
      type, tag, prefix, field('Since', since), field('Until', until), moreBox,
      h('button', { type: 'submit', class: 'primary' }, 'Filter'),
      liveBtn, pauseBtn, rate),
    list, pager);

  function apply() {
    f.type = type.value.trim(); f.tag = tag.value.trim(); f.stream_prefix = prefix.value.trim();
    for (const k of MORE_FILTERS) f[k] = more[k].value.trim();
    f.since = since.value ? new Date(since.value).toISOString() : '';
    f.until = until.value ? new Date(until.value).toISOString() : '';
    f.from = '';
    if (live) { stopLive(); startLive(); } else load();
  }

  function filterQuery() {
    return {
      type: f.type ? f.type.split(',').map(s => s.trim()) : undefined,
      tag: f.tag ? f.tag.split(',').map(s => s.trim()) : undefined,
      stream_prefix: f.stream_prefix, since: f.since, until: f.until,
      type_pattern: csv(f.type_pattern), stream_pattern: csv(f.stream_pattern),
      aggregate_type: f.aggregate_type, aggregate_id: f.aggregate_id,
      ...metadataParams(f.metadata),
    };
  }

  async function load() {
    const kept = Object.fromEntries(MORE_FILTERS.map(k => [k, f[k]]));
    setParams(['log'], { type: f.type, tag: f.tag, stream_prefix: f.stream_prefix, since: f.since, until: f.until, ...kept, from: f.from, dir: f.dir === 'backward' ? '' : f.dir });
    let r;
    try {
      r = await api('/all' + qs({ ...filterQuery(), direction: f.dir, from: f.from || (f.dir === 'backward' ? 'end' : 'start'), limit: PAGE }));
    } catch (e) { mount(list, errorBox(e)); mount(pager); return; }
    const corr = correlations(r.events);
    mount(list, r.events.length ? r.events.map(e => eventCard(e, { showStream: true, correlated: corr })) : h('p', { class: 'empty' }, 'No events match.'));
    const last = r.events[r.events.length - 1];
    mount(pager,
      f.from ? h('button', { type: 'button', onclick: () => { f.from = ''; load(); } }, f.dir === 'backward' ? '« Latest' : '« First') : '',
      last && r.events.length === PAGE && last.position > 0
        ? h('button', { type: 'button', id: 'log-next', onclick: () => { f.from = String(f.dir === 'backward' ? last.position - 1 : last.position + 1); load(); } }, 'Older »') : '');
  }

  // Live tail: new events on top, at most LIVE_MAX kept; paused, they wait in a buffer.
  let live = null;
  let paused = false;
  let buffered = [];
  let stamps = [];
  let rateTimer = 0;
  function startLive() {
    live = new AbortController();
    paused = false; buffered = []; stamps = [];
    liveBtn.textContent = 'Stop live tail'; liveBtn.setAttribute('aria-pressed', 'true');
    pauseBtn.hidden = false; pauseBtn.textContent = 'Pause';
    mount(pager);
    if (!list.querySelector('.event')) mount(list);
    list.querySelector('.empty')?.remove();
    const ctl = live;
    rateTimer = setInterval(showRate, 500);
    follow('/subscribe/all' + qs({ ...filterQuery(), from: 'end' }), (name, data) => {
      if (name === 'event') {
        const e = JSON.parse(data);
        stamps.push(performance.now());
        if (paused) buffered.push(e); else prepend([e]);
      } else if (name === 'error') {
        toast(JSON.parse(data).message, 'error');
      }
    }, ctl.signal).catch(e => { if (!ctl.signal.aborted) { toast(e.message, 'error'); stopLive(); } });
  }
  function prepend(events) {
    for (const e of events) {
      const card = eventCard(e, { showStream: true });
      card.classList.add('fresh');
      list.prepend(card);
    }
    while (list.children.length > LIVE_MAX) list.lastElementChild.remove();
  }
  function showRate() {
    const now = performance.now();
    stamps = stamps.filter(t => now - t < 5000);
    rate.textContent = `${(stamps.length / 5).toFixed(1)} events/s` + (paused ? ` · ${num(buffered.length)} waiting` : '');
  }
  function stopLive() {
    if (live) live.abort();
    live = null;
    clearInterval(rateTimer);
    liveBtn.textContent = 'Live tail'; liveBtn.setAttribute('aria-pressed', 'false');
    pauseBtn.hidden = true; rate.textContent = '';
  }
  liveBtn.addEventListener('click', () => { if (live) { stopLive(); load(); } else startLive(); });
  pauseBtn.addEventListener('click', () => {
    paused = !paused;
    pauseBtn.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) { prepend(buffered); buffered = []; }
    showRate();
  });
  onLeave(stopLive);
  await load();
  if (params.get('live') === '1') startLive();
}

function localInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// ---------------------------------------------------------------- Groups

function source(g) {
  if (g.stream) return h('span', {}, 'stream ', h('a', { href: link(['stream', g.stream]) }, g.stream));
  const parts = [];
  if (g.types?.length) parts.push('types ' + g.types.join(', '));
  if (g.tags?.length) parts.push('tags ' + g.tags.join(', '));
  if (g.stream_prefix) parts.push('prefix ' + g.stream_prefix);
  return h('span', {}, 'log' + (parts.length ? ': ' + parts.join('; ') : ''));
}

/** How far a group is behind: events of its stream, or positions of the log (filtered groups count every position). */
async function lagOf(g, head) {
  if (g.stream) {
    try {
      const r = await api(`/streams/${enc(g.stream)}` + qs({ direction: 'backward', from: 'end', limit: 1 }));
      const last = r.events[0];
      return last ? Math.max(0, last.revision + 1 - g.checkpoint) : 0;
    } catch { return null; }
  }
  return Math.max(0, head - g.checkpoint);
}

export async function groupsPage(main) {
  const [list, node] = await Promise.all([api('/groups'), api('/node').catch(() => null)]);
  const head = node ? node.head_position : 0;
  const groups = await Promise.all(list.groups.map(async g => {
    const info = await api('/groups/' + enc(g.name)).catch(() => g);
    return { ...g, ...info, lag: await lagOf(info, head) };
  }));
  mount(main, h('h1', {}, 'Groups'),
    groups.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'groups-table' },
      h('thead', {}, h('tr', {}, ['Group', 'Source', 'Strategy', 'Checkpoint', 'Lag', 'In flight', 'Ready', 'Parked', 'Consumers'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, groups.map(g => h('tr', { dataset: { group: g.name } },
        h('td', {}, h('a', { href: link(['groups', g.name]) }, g.name)),
        h('td', {}, source(g)),
        h('td', {}, g.strategy),
        h('td', { class: 'n' }, num(g.checkpoint)),
        h('td', { class: 'n', title: g.stream ? 'events of the stream not yet passed' : 'positions of the log not yet passed (a filtered group skips some)' }, num(g.lag)),
        h('td', { class: 'n' }, num(g.in_flight)),
        h('td', { class: 'n' }, num(g.ready)),
        h('td', { class: 'n' }, g.parked ? h('a', { href: link(['groups', g.name]) }, num(g.parked)) : '0'),
        h('td', {}, (g.consumers || []).join(', '))))))) : h('p', { class: 'empty' }, 'No consumer groups.'));
}

export async function groupPage(main, name) {
  const [g, node] = await Promise.all([api('/groups/' + enc(name)), api('/node').catch(() => null)]);
  const lag = await lagOf(g, node ? node.head_position : 0);
  const parkedList = h('div', { class: 'events', id: 'parked-events' });
  const replay = h('button', {
    type: 'button', class: 'primary', id: 'replay-parked', ...needs('write'),
    onclick: async () => {
      replay.disabled = true;
      try {
        const r = await api(`/groups/${enc(name)}/replay-parked`, { method: 'POST' });
        toast(`${num(r.replayed)} parked events put back in line`);
        await groupPage(main, name);
      } catch (e) { toast(e.message, 'error'); replay.disabled = false; }
    },
  }, 'Replay parked');
  const settings = ['strategy', 'start', 'ack_timeout_ms', 'max_retries', 'max_in_flight', 'checkpoint_every'];
  mount(main,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/groups' }, 'Groups'), ' / '),
    h('h1', {}, name),
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('h2', {}, 'State'), h('dl', { class: 'kv', id: 'group-state' },
        h('dt', {}, 'source'), h('dd', {}, source(g)),
        h('dt', {}, 'checkpoint'), h('dd', {}, num(g.checkpoint), h('span', { class: 'muted' }, ` (saved ${num(g.saved_checkpoint)})`)),
        h('dt', {}, 'lag'), h('dd', {}, num(lag)),
        h('dt', {}, 'in flight'), h('dd', {}, num(g.in_flight)),
        h('dt', {}, 'ready'), h('dd', {}, num(g.ready)),
        h('dt', {}, 'parked'), h('dd', { id: 'group-parked' }, num(g.parked)),
        h('dt', {}, 'consumers'), h('dd', {}, (g.consumers || []).join(', ') || '–'))),
      h('div', { class: 'card' }, h('h2', {}, 'Settings'), h('dl', { class: 'kv' }, settings.map(k => [h('dt', {}, k.replaceAll('_', ' ')), h('dd', {}, String(g[k]))])))),
    h('h2', {}, 'Parked events ', replay),
    h('p', { class: 'muted' }, 'The group’s dead-letter stream, newest first. Replay puts every parked event not yet replayed back in line.'),
    parkedList);
  try {
    const r = await api(`/streams/${enc('$group-' + name + '-parked')}` + qs({ direction: 'backward', from: 'end', limit: PAGE }));
    mount(parkedList, r.events.length ? r.events.map(e => parkedCard(e)) : h('p', { class: 'empty' }, 'Nothing parked.'));
  } catch (e) {
    mount(parkedList, e instanceof ApiError && e.status === 404 ? h('p', { class: 'empty' }, 'Nothing parked.') : errorBox(e));
  }
}

/** A parked record: where the event was, why it was parked, and a link to it. */
function parkedCard(e) {
  const d = e.data || {};
  return h('div', { class: 'card parked', dataset: { eventId: d.event_id || '' } },
    h('dl', { class: 'kv inline' },
      h('dt', {}, 'event'), h('dd', {}, d.stream !== undefined ? h('a', { href: link(['stream', d.stream], { from: d.revision, dir: 'forward' }) }, `${d.stream} #${d.revision}`) : '–'),
      h('dt', {}, 'position'), h('dd', {}, num(d.position)),
      h('dt', {}, 'deliveries'), h('dd', {}, num(d.deliveries)),
      h('dt', {}, 'parked'), h('dd', {}, time(e.timestamp))),
    h('p', { class: 'reason' }, d.reason || ''),
    h('details', {}, h('summary', {}, 'Record'), jsonBlock(e.data, e.data_base64)));
}
