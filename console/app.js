// The console's entry: who the caller is (asking for a token when the server
// checks them), the routes after '#', and the keyboard shortcuts.

import { api, ApiError, setToken, token } from './api.js';
import { h, mount, errorBox } from './dom.js';
import { streamsPage, streamPage, logPage, groupsPage, groupPage } from './pages.js';
import { nodePage } from './node.js';
import { session } from './session.js';

const main = document.getElementById('main');


/** A page's cleanup (closing a live tail, stopping samplers) when the route changes. */
let leave = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  // A link with a malformed escape (%E0) opens the "not found" page, not
  // an error that leaves the last page on screen.
  let parts;
  try { parts = path.split('/').map(decodeURIComponent); } catch { parts = ['not-found']; }
  return { parts, params: new URLSearchParams(query) };
}


/** Counts routes: a page still loading when the route changed must not draw over the new one. */
let current = 0;

async function route() {
  if (leave) { leave(); leave = null; }
  const gen = ++current;
  document.getElementById('toast').classList.remove('show');
  const { parts, params } = parseHash();
  const page = parts[0] || 'streams';
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  // Each route draws into its own element: what a page left behind draws
  // (an answer that arrives after the user moved on) lands in a detached one.
  const view = h('div', { class: 'view' });
  mount(main, view);
  // A page that sets its cleanup after it was already left is cleaned up at once.
  const ctx = { params, onLeave: (f) => { if (gen === current) leave = f; else f(); } };
  try {
    switch (page) {
      case 'streams': await streamsPage(view, ctx); break;
      case 'stream': await streamPage(view, parts.slice(1).join('/'), ctx); break;
      case 'log': await logPage(view, ctx); break;
      case 'groups': await (parts[1] ? groupPage(view, parts.slice(1).join('/'), ctx) : groupsPage(view, ctx)); break;
      case 'node': await nodePage(view, ctx); break;
      default: mount(view, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/streams' }, 'Streams')));
    }
  } catch (e) {
    if (gen !== current) return;
    if (e instanceof ApiError && e.status === 401) return login('The token was refused; enter another.');
    mount(view, errorBox(e));
  }
}

function showWho() {
  const who = document.getElementById('who');
  if (!session.auth) {
    mount(who, h('span', { class: 'badge' }, 'open mode'));
    return;
  }
  mount(who,
    h('span', { class: 'badge', title: session.stream_prefixes.length ? 'streams: ' + session.stream_prefixes.join(', ') : 'every stream' }, session.role),
    h('button', { type: 'button', class: 'small', onclick: () => { setToken(''); login(); } }, 'Sign out'));
}

function login(message) {
  mount(document.getElementById('who'));
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'token' });
  const form = h('form', {
    class: 'card login', onsubmit: async (e) => {
      e.preventDefault();
      setToken(input.value.trim());
      await start();
    },
  },
  h('h1', {}, 'Sign in'),
  h('p', {}, message || 'This server checks tokens. The token stays in this tab (session storage) until you sign out or close it.'),
  h('label', { for: 'token' }, 'Token'), input,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  mount(main, form);
  input.focus();
}

async function start() {
  try {
    Object.assign(session, await api('/whoami'));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      const had = token();
      setToken('');
      return login(had ? 'The token was refused; enter another.' : undefined);
    }
    mount(main, errorBox(e));
    return;
  }
  document.body.dataset.role = session.role;
  showWho();
  await route();
}

window.addEventListener('hashchange', () => { if (document.body.dataset.role) route(); });

// Keyboard: "/" finds, "g" then s/l/g/n goes to a page, Escape leaves a field.
let pendingG = 0;
document.addEventListener('keydown', (e) => {
  const t = e.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement;
  if (e.key === 'Escape' && typing) { t.blur(); return; }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === '/') {
    const s = main.querySelector('input[type=search]');
    if (s) { e.preventDefault(); s.focus(); s.select(); }
    return;
  }
  if (e.key === 'g') { pendingG = Date.now(); return; }
  if (Date.now() - pendingG < 1500) {
    const to = { s: 'streams', l: 'log', g: 'groups', n: 'node' }[e.key];
    pendingG = 0;
    if (to) { e.preventDefault(); location.hash = '#/' + to; }
  }
});

start();
