// The console's only way to the server: annal's public HTTP API and its
// Server-Sent Events, with the token kept in this tab's session storage.

const TOKEN_KEY = 'annal-token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer the API refused: its HTTP status, error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function send(path, { method = 'GET', body, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!resp.ok) {
    throw new ApiError(resp.status, json?.error || 'http_' + resp.status, json?.message || text || resp.statusText);
  }
  return { json, resp };
}

/** Calls the API; JSON in and out. Throws ApiError on a refusal. */
export async function api(path, opts) {
  return (await send(path, opts)).json;
}

/** Like api(), with the answer's ETag unquoted (the version to send back as `expected`). */
export async function apiVersioned(path, opts) {
  const { json, resp } = await send(path, opts);
  const tag = resp.headers.get('etag');
  return { json, version: tag ? tag.replace(/^"|"$/g, '') : null };
}

/** The Prometheus text of /metrics. */
export async function metricsText(signal) {
  const resp = await fetch('/metrics', { headers: headers({}), signal });
  if (!resp.ok) throw new ApiError(resp.status, 'metrics', await resp.text());
  return resp.text();
}

/** A query string from an object; arrays repeat their key; empty values are left out. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.filter(x => x !== '').forEach(x => u.append(k, x));
    else u.append(k, String(v));
  }
  const s = u.toString();
  return s ? '?' + s : '';
}

export const enc = encodeURIComponent;

/**
 * Follows an SSE route with fetch (EventSource cannot send a token): calls
 * onEvent(name, data) for each message until signal aborts; resolves when
 * the server ends the stream, rejects on a refusal or a broken connection.
 */
export async function follow(path, onEvent, signal) {
  const resp = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal });
  if (!resp.ok) {
    let j = null;
    try { j = await resp.json(); } catch { j = null; }
    throw new ApiError(resp.status, j?.error || 'http_' + resp.status, j?.message || resp.statusText);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, '');
      let name = 'message';
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'event') name = val;
        else if (field === 'data') data.push(val);
      }
      if (data.length) onEvent(name, data.join('\n'));
    }
  }
}
