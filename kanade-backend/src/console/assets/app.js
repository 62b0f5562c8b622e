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

let me = null; // the principal: {name, role, scopes, kind}
let generation = 0; // bumped on every navigation: live views of old pages stop
let inFlight = new AbortController(); // aborted on navigation: no request outlives its page

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
  // Reads end with their page; a change, once sent, is left to finish.
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (method === 'GET') init.signal = inFlight.signal;
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
    // Signed out meanwhile (the form is up), or the page was left.
    if (me === null || error.name === 'AbortError') return;
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
  // Whatever page was loading is not shown over the sign-in form.
  generation++;
  inFlight.abort();
  inFlight = new AbortController();
  showSignIn(message);
}

// Whether the signed-in principal is narrowed by scopes (the freeze needs
// an unscoped one).
function scoped() {
  const s = (me && me.scopes) || {};
  return ['jobs', 'tags', 'groups', 'pcs'].some((k) => (s[k] || []).length > 0);
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
  signInOffer().then((offer) => {
    if (!offer || !form.isConnected) return;
    form.append(el('p', { class: 'muted' }, 'or'),
      button('sso-button', offer.label, () => startSso(offer).catch((error) =>
        document.getElementById('sign-in-error').replaceChildren(notice(error.message))), 'primary'));
  });
}

// ---- single sign-on (OIDC authorization code flow with PKCE, S256) -------

const SSO_KEY = 'kanade.sso';

async function signInOffer() {
  try {
    const response = await fetch('/console/sign-in.json', { cache: 'no-store', credentials: 'omit' });
    return response.ok ? (await response.json()).oidc : null;
  } catch (_) {
    return null;
  }
}

function base64url(bytes) {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function redirectUri() {
  return location.origin + '/';
}

// Sends the operator to the issuer; the answer comes back to / with a code.
async function startSso(offer) {
  if (!window.isSecureContext || !crypto.subtle) {
    throw new Error('Single sign-on needs the console over HTTPS (or on localhost).');
  }
  const verifier = randomText(32);
  const state = randomText(16);
  const nonce = randomText(16);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  sessionStorage.setItem(SSO_KEY, JSON.stringify({ verifier, state, nonce, back: location.hash || '#/fleet' }));
  const url = new URL(offer.authorization_endpoint);
  const ask = {
    response_type: 'code', client_id: offer.client_id, redirect_uri: redirectUri(), scope: offer.scope,
    state, nonce, code_challenge: base64url(new Uint8Array(digest)), code_challenge_method: 'S256',
  };
  for (const [key, value] of Object.entries(ask)) url.searchParams.set(key, value);
  location.assign(url.toString());
}

// Back from the issuer: checks the state, trades the code (with the PKCE
// verifier) for the ID token, checks its nonce, and signs in with it.
async function finishSso(params) {
  const pending = JSON.parse(sessionStorage.getItem(SSO_KEY) || 'null');
  sessionStorage.removeItem(SSO_KEY);
  history.replaceState(null, '', '/' + ((pending && pending.back) || '#/fleet'));
  // Nothing from the address bar is shown unless this tab started the
  // sign-in, and then only as one of the codes the standard defines.
  if (!pending || params.get('state') !== pending.state) throw new Error('This sign-in was not started from this tab: start again.');
  if (params.get('error')) {
    const known = ['access_denied', 'login_required', 'consent_required', 'interaction_required', 'invalid_request',
      'unauthorized_client', 'unsupported_response_type', 'invalid_scope', 'server_error', 'temporarily_unavailable'];
    const code = known.includes(params.get('error')) ? ' (' + params.get('error') + ')' : '';
    throw new Error('The identity provider did not sign you in' + code + '.');
  }
  const offer = await signInOffer();
  if (!offer) throw new Error('Single sign-on is not configured on this backend.');
  const form = new URLSearchParams({
    grant_type: 'authorization_code', code: params.get('code') || '', redirect_uri: redirectUri(),
    client_id: offer.client_id, code_verifier: pending.verifier,
  });
  const response = await fetch(offer.token_endpoint, { method: 'POST', body: form, credentials: 'omit', headers: { Accept: 'application/json' } });
  const tokens = await response.json().catch(() => ({}));
  if (!response.ok || typeof tokens.id_token !== 'string') {
    throw new Error('The identity provider gave no ID token' + (tokens.error ? ' (' + tokens.error + ')' : '') + '.');
  }
  let claims = {};
  try {
    claims = JSON.parse(atob(tokens.id_token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch (_) {
    throw new Error('The identity provider\'s ID token could not be read.');
  }
  if (claims.nonce !== pending.nonce) throw new Error('The ID token is not for this sign-in (its nonce differs).');
  sessionStorage.setItem(TOKEN_KEY, tokens.id_token);
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
    const freeze = inForce(await api('GET', '/api/freeze'));
    if (freeze) {
      banner.replaceChildren('Fleet frozen' + (freeze.until ? ' until ' + when(freeze.until) : '') +
        (freeze.reason ? ': ' + freeze.reason : '') + '. Scheduled fires are held.');
      banner.hidden = false;
    } else banner.hidden = true;
  } catch (_) {
    banner.hidden = true;
  }
}

// A freeze whose `until` has passed no longer holds anything.
function inForce(freeze) {
  if (!freeze || !freeze.until) return freeze;
  return new Date(freeze.until).getTime() > Date.now() ? freeze : null;
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
  inFlight.abort();
  inFlight = new AbortController();
  if (me === null) {
    if (!sessionStorage.getItem(TOKEN_KEY)) return showSignIn();
    let who;
    try {
      who = await api('GET', '/api/whoami');
    } catch (error) {
      // A newer navigation took over (and aborted this call): it decides.
      if (mine !== generation || error.name === 'AbortError') return;
      sessionStorage.removeItem(TOKEN_KEY);
      return showSignIn(error.status === 401 ? 'Sign in again.' : error.message);
    }
    if (mine !== generation) return;
    me = who;
  }
  let page = 'fleet';
  let rest = [];
  try {
    [page, ...rest] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  } catch (_) {
    page = 'fleet';
  }
  const known = Object.hasOwn(ROUTES, page);
  const render = known ? ROUTES[page] : ROUTES.fleet;
  renderChrome(known ? page : 'fleet');
  // A page the role may not use (typed into the address bar) says so; the
  // server would refuse its actions anyway.
  const needs = (PAGES.find(([id]) => id === page) || [])[2] || 'viewer';
  if (!may(needs)) {
    document.getElementById('freeze-banner').hidden = true;
    document.getElementById('main').replaceChildren(notice('This page needs the ' + needs + ' role; you are ' + me.role + '.'));
    return;
  }
  renderFreezeBanner();
  const main = document.getElementById('main');
  const view = el('div', { class: 'page' });
  try {
    await render(view, rest, () => mine === generation);
  } catch (error) {
    view.replaceChildren(notice(error.message));
  }
  if (mine === generation && me !== null) main.replaceChildren(view);
}

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', async () => {
  const params = new URLSearchParams(location.search);
  if (params.has('code') || params.has('error')) {
    try {
      await finishSso(params);
    } catch (error) {
      showSignIn(error.message);
      return;
    }
  }
  route();
});
