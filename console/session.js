// What the caller may do, and the links between pages: shared by the entry
// (app.js) and the pages, which import it rather than the entry, so that
// imports only point from the entry down to the pages.

/** What the caller may do: {auth, role, stream_prefixes}. */
export const session = { auth: false, role: 'read', stream_prefixes: [] };

const RANK = { read: 0, write: 1, admin: 2 };
/** True if the caller's role includes `role`. */
export function can(role) {
  return RANK[session.role] >= RANK[role];
}

/** The address of a route: link(['stream', name], {from: 5}). */
export function link(parts, params) {
  const p = parts.map(encodeURIComponent).join('/');
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v !== undefined && v !== null)).toString() : '';
  return '#/' + p + (q ? '?' + q : '');
}
