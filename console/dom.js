// Small helpers to build the page: elements, formatting, JSON views, copy buttons.

/** An element: h('a', {href: '#'}, 'text', child, [more]). on* attributes are listeners. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the content of el. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${UNITS[i]}`;
}

export function num(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

/** An RFC 3339 time shown in the browser's zone, with milliseconds; the full value as a tooltip. */
export function time(t) {
  if (!t) return h('span', { class: 'muted' }, '–');
  const d = new Date(t);
  const pad = (x, n = 2) => String(x).padStart(n, '0');
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  return h('time', { datetime: t, title: t }, s);
}

let toastTimer = 0;
/** A short message at the bottom of the page. */
export function toast(message, kind = 'info') {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.dataset.kind = kind;
  el.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove('show'), 4000);
}

/** A button that copies text. */
export function copyButton(text, label = 'Copy') {
  return h('button', {
    type: 'button', class: 'small', title: 'Copy to the clipboard',
    onclick: async (e) => {
      e.stopPropagation();
      try {
        await navigator.clipboard.writeText(text);
        toast('Copied');
      } catch {
        toast('The browser refused the clipboard', 'error');
      }
    },
  }, label);
}

/** Entries of one object or array drawn at most; the rest is counted. */
const MAX_ENTRIES = 500;
/** Pretty-printed JSON longer than this is shown as plain, cut text. */
const MAX_TREE_TEXT = 256 * 1024;

/**
 * Pretty-printed JSON, collapsible by object and array, with a copy button.
 * Any client that may write can put a large document in an event: a fold's
 * entries are drawn only when it is first opened, at most MAX_ENTRIES of
 * them, and a document whose text passes MAX_TREE_TEXT is shown as cut
 * text (the copy button still copies all of it), so that no event can
 * freeze the page.
 */
export function jsonBlock(value, base64) {
  if (value === undefined && base64 !== undefined) {
    return h('div', { class: 'json' }, h('div', { class: 'json-bar' }, h('span', { class: 'muted' }, 'binary (base64)'), copyButton(base64)),
      h('pre', { class: 'code' }, cut(base64)));
  }
  const text = JSON.stringify(value, null, 2);
  const body = text.length > MAX_TREE_TEXT ? cut(text) : jsonNode(value, 0);
  return h('div', { class: 'json' }, h('div', { class: 'json-bar' }, copyButton(text)), h('pre', { class: 'code' }, body));
}

/** `text`, cut to MAX_TREE_TEXT characters with a note of what was left out. */
function cut(text) {
  if (text.length <= MAX_TREE_TEXT) return text;
  return [text.slice(0, MAX_TREE_TEXT), h('span', { class: 'muted' }, `\n… ${text.length - MAX_TREE_TEXT} more characters (copy to see them all)`)];
}

function jsonNode(v, depth) {
  if (v === null) return h('span', { class: 'j-null' }, 'null');
  if (typeof v === 'string') return h('span', { class: 'j-str' }, JSON.stringify(v));
  if (typeof v === 'number') return h('span', { class: 'j-num' }, String(v));
  if (typeof v === 'boolean') return h('span', { class: 'j-bool' }, String(v));
  const isArr = Array.isArray(v);
  const count = isArr ? v.length : Object.keys(v).length;
  const [open, close] = isArr ? ['[', ']'] : ['{', '}'];
  if (!count) return open + close;
  const pad = '  '.repeat(depth + 1);
  const inner = h('span', { class: 'j-inner' });
  // Drawn on first opening only: a closed fold costs one node.
  const draw = () => {
    const entries = [];
    if (isArr) {
      for (let i = 0; i < Math.min(v.length, MAX_ENTRIES); i++) entries.push([i, v[i]]);
    } else {
      for (const k in v) {
        if (entries.length >= MAX_ENTRIES) break;
        if (Object.prototype.hasOwnProperty.call(v, k)) entries.push([k, v[k]]);
      }
    }
    const more = count - entries.length;
    inner.append('\n', ...entries.flatMap(([k, x], i) => [
      pad, ...(isArr ? [] : [h('span', { class: 'j-key' }, JSON.stringify(k)), ': ']),
      jsonNode(x, depth + 1), i < count - 1 ? ',' : '', '\n',
    ]), ...(more > 0 ? [pad, h('span', { class: 'muted' }, `… ${more} more (copy to see them all)`), '\n'] : []), '  '.repeat(depth));
  };
  let drawn = false;
  const startsOpen = depth < 3;
  if (startsOpen) { draw(); drawn = true; }
  const summary = h('span', { class: 'j-more muted' }, `…${count} ${isArr ? 'items' : 'keys'}`);
  const node = h('span', { class: startsOpen ? 'j-fold' : 'j-fold closed' });
  const toggle = h('button', {
    type: 'button', class: 'j-toggle', 'aria-expanded': String(startsOpen), title: 'Fold or unfold',
    onclick: () => {
      if (!drawn) { draw(); drawn = true; }
      const closed = node.classList.toggle('closed');
      toggle.setAttribute('aria-expanded', String(!closed));
    },
  }, open);
  node.append(toggle, inner, summary, close);
  return node;
}

/** A labelled input. */
export function field(label, input) {
  return h('label', { class: 'field' }, h('span', {}, label), input);
}

/** "Loading", then the content or the error. */
export function errorBox(e) {
  return h('div', { class: 'error', role: 'alert' }, h('strong', {}, e.code ? `${e.status || ''} ${e.code}` : 'Error'), ': ', e.message || String(e));
}
