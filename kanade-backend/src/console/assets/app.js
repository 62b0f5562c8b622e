// kanade console: one page over the /api routes. Every value from the API is
// put into the page as text (createTextNode / textContent), never as HTML.
// The token lives in this tab's sessionStorage and goes out only in the
// Authorization header; no cookie is ever used.
'use strict';

const TOKEN_KEY = 'kanade.token';
const RANK = { viewer: 1, operator: 2, admin: 3 };
const PAGES = [
  ['fleet', 'Fleet', 'viewer'],
  ['jobs', 'Jobs', 'viewer'],
  ['run', 'Run', 'operator'],
  ['executions', 'Executions', 'viewer'],
  ['schedules', 'Schedules', 'viewer'],
  ['approvals', 'Approvals', 'viewer'],
  ['audit', 'Audit', 'admin'],
];
const FINISHED = ['completed', 'cancelled', 'denied', 'expired', 'halted', 'aborted'];

let me = null; // the principal: {name, role, scopes, kind}
let generation = 0; // bumped on every navigation: live views of old pages stop

// ---- small helpers -------------------------------------------------------

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}

function may(role) {
  return me !== null && RANK[me.role] >= RANK[role];
}

function when(text) {
  if (!text) return '';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
}

function ago(text) {
  const ms = Date.now() - new Date(text).getTime();
  if (Number.isNaN(ms)) return '';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function badge(text, kind) {
  return el('span', { class: 'badge ' + (kind || String(text).toLowerCase()) }, text);
}

function table(id, headings, rows) {
  return el('div', { class: 'scroll' },
    el('table', { id },
      el('thead', {}, el('tr', {}, headings.map((h) => el('th', {}, h)))),
      rows instanceof HTMLTableSectionElement ? rows : el('tbody', {}, rows)));
}

function section(title, ...kids) {
  return el('section', {}, el('h2', {}, title), kids);
}

function button(id, label, onclick, kind) {
  return el('button', { id, type: 'button', class: kind || '', onclick }, label);
}

function notice(message, kind) {
  return el('p', { class: 'notice ' + (kind || 'error'), role: 'alert' }, message);
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || 'HTTP ' + status);
    this.status = status;
    this.details = body ? body.details : null;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = { error: text };
  }
  if (!response.ok) {
    if (response.status === 401 && me !== null) signOut('The server no longer accepts your token: sign in again.');
    throw new ApiError(response.status, data);
  }
  return data;
}

// Runs an action from a button: disables it meanwhile, shows the error next
// to it, then re-renders the page.
async function act(target, work) {
  const button = target instanceof HTMLElement ? target : null;
  if (button) button.disabled = true;
  try {
    await work();
    await route();
  } catch (error) {
    const box = document.getElementById('action-error');
    const message = notice(error.message);
    if (box) box.replaceChildren(message);
    else document.getElementById('main').prepend(el('div', { id: 'action-error' }, message));
  } finally {
    if (button) button.disabled = false;
  }
}

// ---- sign in -------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  showSignIn(message);
}

function showSignIn(message) {
  document.getElementById('nav').replaceChildren();
  document.getElementById('who').replaceChildren();
  document.getElementById('freeze-banner').hidden = true;
  const input = el('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const form = el('form', { id: 'sign-in', class: 'card narrow' },
    el('h1', {}, 'Sign in'),
    el('label', { for: 'token' }, 'API token or OIDC ID token'),
    input,
    el('p', { class: 'muted' }, 'Create one with: kanade-backend token create --name NAME --role viewer|operator|admin'),
    el('button', { id: 'sign-in-button', type: 'submit' }, 'Sign in'),
    el('div', { id: 'sign-in-error' }, message ? notice(message) : null));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      me = await api('GET', '/api/whoami');
      if (!location.hash || location.hash === '#/' || location.hash === '#') location.hash = '#/fleet';
      await route();
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      me = null;
      document.getElementById('sign-in-error').replaceChildren(
        notice(error.status === 401 ? 'That token was not accepted.' : error.message));
    }
  });
  document.getElementById('main').replaceChildren(form);
  input.focus();
}

function renderChrome(page) {
  const links = PAGES.filter(([, , role]) => may(role)).map(([id, label]) =>
    el('a', { href: '#/' + id, id: 'nav-' + id, class: id === page ? 'current' : '' }, label));
  document.getElementById('nav').replaceChildren(...links);
  document.getElementById('who').replaceChildren(
    el('span', { id: 'whoami' }, me.name + ' · ' + me.role),
    button('sign-out', 'Sign out', () => signOut()));
}

async function renderFreezeBanner() {
  const banner = document.getElementById('freeze-banner');
  try {
    const freeze = await api('GET', '/api/freeze');
    if (freeze) {
      banner.replaceChildren('Fleet frozen' + (freeze.until ? ' until ' + when(freeze.until) : '') +
        (freeze.reason ? ': ' + freeze.reason : '') + '. Scheduled fires are held.');
      banner.hidden = false;
    } else banner.hidden = true;
  } catch (_) {
    banner.hidden = true;
  }
}

// ---- router --------------------------------------------------------------

// The pages live in fleet.js and operations.js, loaded after this file:
// looked up when a page is shown.
const ROUTES = {
  fleet: (...args) => fleetPage(...args),
  pc: (...args) => pcPage(...args),
  jobs: (...args) => jobsPage(...args),
  job: (...args) => jobPage(...args),
  run: (...args) => runPage(...args),
  executions: (...args) => executionsPage(...args),
  exec: (...args) => executionPage(...args),
  schedules: (...args) => schedulesPage(...args),
  approvals: (...args) => approvalsPage(...args),
  audit: (...args) => auditPage(...args),
};

async function route() {
  const mine = ++generation;
  if (me === null) {
    if (!sessionStorage.getItem(TOKEN_KEY)) return showSignIn();
    try {
      me = await api('GET', '/api/whoami');
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showSignIn(error.status === 401 ? 'Sign in again.' : error.message);
    }
  }
  const [page, ...rest] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const known = Object.hasOwn(ROUTES, page);
  const render = known ? ROUTES[page] : ROUTES.fleet;
  renderChrome(known ? page : 'fleet');
  renderFreezeBanner();
  const main = document.getElementById('main');
  const view = el('div', { class: 'page' });
  try {
    await render(view, rest, () => mine === generation);
  } catch (error) {
    view.replaceChildren(notice(error.message));
  }
  if (mine === generation) main.replaceChildren(view);
}

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', route);
