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

const ROUTES = {
  fleet: fleetPage,
  pc: pcPage,
  jobs: jobsPage,
  job: jobPage,
  run: runPage,
  executions: executionsPage,
  exec: executionPage,
  schedules: schedulesPage,
  approvals: approvalsPage,
  audit: auditPage,
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
  const render = ROUTES[page] || fleetPage;
  renderChrome(ROUTES[page] ? page : 'fleet');
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

// ---- fleet ---------------------------------------------------------------

async function fleetPage(view) {
  const agents = await api('GET', '/api/agents');
  const online = agents.filter((a) => a.online).length;
  const skewed = agents.filter((a) => a.clock_skewed).length;
  const search = el('input', { id: 'fleet-search', type: 'search', placeholder: 'Search pc, host, OS, group, version' });
  const state = el('select', { id: 'fleet-state' },
    el('option', { value: 'all' }, 'All'),
    el('option', { value: 'online' }, 'Online'),
    el('option', { value: 'offline' }, 'Offline'));
  const body = el('tbody');
  const shown = el('span', { id: 'fleet-shown', class: 'muted' });
  const fill = () => {
    const needle = search.value.trim().toLowerCase();
    const rows = agents.filter((a) => {
      if (state.value === 'online' && !a.online) return false;
      if (state.value === 'offline' && a.online) return false;
      if (!needle) return true;
      return [a.pc_id, a.hostname, a.os_family, a.agent_version, ...(a.groups || [])]
        .some((v) => v && String(v).toLowerCase().includes(needle));
    });
    shown.textContent = rows.length + ' of ' + agents.length + ' shown';
    body.replaceChildren(...rows.map((a) => el('tr', { 'data-pc': a.pc_id },
      el('td', {}, el('a', { href: '#/pc/' + encodeURIComponent(a.pc_id) }, a.pc_id)),
      el('td', {}, a.online ? badge('online') : badge('offline')),
      el('td', {}, a.agent_version),
      el('td', {}, a.os_family || ''),
      el('td', {}, (a.groups || []).join(', ')),
      el('td', { class: a.clock_skewed ? 'warn' : '' }, a.clock_offset_ms == null ? '' : a.clock_offset_ms + ' ms'),
      el('td', { title: when(a.last_seen) }, ago(a.last_seen)))));
  };
  search.addEventListener('input', fill);
  state.addEventListener('change', fill);
  fill();
  view.append(
    el('h1', {}, 'Fleet'),
    el('div', { class: 'counts', id: 'fleet-counts' },
      el('div', {}, el('b', { id: 'count-known' }, agents.length), ' known'),
      el('div', {}, el('b', { id: 'count-online' }, online), ' online'),
      el('div', {}, el('b', { id: 'count-offline' }, agents.length - online), ' offline'),
      el('div', {}, el('b', { id: 'count-skewed' }, skewed), ' clock skewed')),
    el('div', { class: 'filters' }, search, state, shown),
    el('div', { class: 'scroll' }, el('table', { id: 'fleet-table' },
      el('thead', {}, el('tr', {}, ['PC', 'State', 'Version', 'OS', 'Groups', 'Clock offset', 'Last seen'].map((h) => el('th', {}, h)))),
      body)));
}

async function pcPage(view, [pc]) {
  const data = await api('GET', '/api/agents/' + encodeURIComponent(pc));
  const a = data.agent;
  const hw = a.hardware;
  view.append(
    el('h1', {}, a.pc_id, ' ', a.online ? badge('online') : badge('offline')),
    el('dl', { class: 'facts', id: 'pc-facts' },
      el('dt', {}, 'Host'), el('dd', {}, a.hostname || ''),
      el('dt', {}, 'OS'), el('dd', {}, a.os_family || ''),
      el('dt', {}, 'Agent version'), el('dd', {}, a.agent_version),
      el('dt', {}, 'Groups'), el('dd', {}, (a.groups || []).join(', ')),
      el('dt', {}, 'Clock offset'), el('dd', {}, a.clock_offset_ms == null ? '' : a.clock_offset_ms + ' ms'),
      el('dt', {}, 'Last seen'), el('dd', {}, when(a.last_seen)),
      hw ? [el('dt', {}, 'Hardware'), el('dd', {}, JSON.stringify(hw))] : null,
      (a.quarantined_versions || []).length ? [el('dt', {}, 'Quarantined'), el('dd', {}, a.quarantined_versions.join(', '))] : null),
    section('Recent results', table('pc-results', ['Execution', 'Job', 'Exit', 'Finished'],
      data.results.map((r) => el('tr', {},
        el('td', {}, r.exec_id ? el('a', { href: '#/exec/' + encodeURIComponent(r.exec_id) + '/' + encodeURIComponent(a.pc_id) }, r.exec_id) : ''),
        el('td', {}, (r.job_id || '') + (r.version ? ' ' + r.version : '')),
        el('td', {}, r.skipped ? badge('skipped ' + r.exit_code, 'skipped') : badge(String(r.exit_code), r.exit_code === 0 ? 'ok' : 'failed')),
        el('td', {}, when(r.finished_at)))))),
    section('Checks', data.checks.length === 0 ? el('p', { class: 'muted' }, 'No check has reported for this pc.') :
      table('pc-checks', ['Check', 'Status', 'Detail', 'Since'], data.checks.map((c) => el('tr', {},
        el('td', {}, c.check), el('td', {}, badge(c.status)), el('td', {}, c.detail), el('td', {}, when(c.since)))))),
    section('Inventory', data.facts.length === 0 ? el('p', { class: 'muted' }, 'No inventory job has reported for this pc.') :
      data.facts.map((f) => el('div', { class: 'card' },
        el('h3', {}, f.job_id + ' ' + f.version + ' · ' + when(f.finished_at)),
        el('pre', {}, JSON.stringify(f.facts, null, 2))))));
}

// ---- jobs ----------------------------------------------------------------

async function jobsPage(view) {
  const jobs = await api('GET', '/api/jobs');
  jobs.sort((x, y) => x.id.localeCompare(y.id));
  view.append(el('h1', {}, 'Jobs'),
    table('jobs-table', ['Job', 'Version', 'Description', 'Tags'], jobs.map((j) => el('tr', { 'data-job': j.id },
      el('td', {}, el('a', { href: '#/job/' + encodeURIComponent(j.id) }, j.id)),
      el('td', {}, j.version),
      el('td', {}, j.description || ''),
      el('td', {}, (j.tags || []).join(', '))))));
  if (may('operator')) view.append(applyForm());
}

function applyForm() {
  const text = el('textarea', { id: 'manifest', rows: 14, spellcheck: 'false', placeholder: 'id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s' });
  const outcome = el('div', { id: 'apply-outcome' });
  const apply = async (event) => {
    event.target.disabled = true;
    try {
      const job = await api('POST', '/api/jobs', { yaml: text.value });
      outcome.replaceChildren(notice('Applied ' + job.id + ' ' + job.version + '.', 'ok'));
      setTimeout(() => { location.hash = '#/job/' + encodeURIComponent(job.id); }, 600);
    } catch (error) {
      outcome.replaceChildren(manifestErrors(text.value, error));
    } finally {
      event.target.disabled = false;
    }
  };
  return section('Apply a manifest', text, el('div', {}, button('apply', 'Apply', apply, 'primary')), outcome);
}

// The manifest with its lines numbered and each problem next to its line.
function manifestErrors(yaml, error) {
  const problems = Array.isArray(error.details) ? error.details : [];
  if (problems.length === 0) return notice(error.message);
  const byLine = new Map();
  const loose = [];
  for (const p of problems) {
    const message = (p.field ? p.field + ': ' : '') + p.message;
    if (p.line) byLine.set(p.line, [...(byLine.get(p.line) || []), message]);
    else loose.push(message);
  }
  const rows = [];
  yaml.split('\n').forEach((line, n) => {
    const number = n + 1;
    const here = byLine.get(number);
    rows.push(el('tr', { class: here ? 'bad' : '' }, el('td', { class: 'num' }, number), el('td', {}, el('code', {}, line))));
    if (here) {
      for (const message of here) {
        rows.push(el('tr', { class: 'error-line', 'data-line': number }, el('td', { class: 'num' }, '↑'), el('td', {}, 'line ' + number + ': ' + message)));
      }
    }
  });
  return el('div', { id: 'manifest-errors' },
    notice('The manifest was not applied: ' + problems.length + ' problem' + (problems.length > 1 ? 's' : '') + '.'),
    loose.map((m) => el('p', { class: 'error-line' }, m)),
    el('table', { class: 'listing' }, el('tbody', {}, rows)));
}

async function jobPage(view, [id]) {
  const data = await api('GET', '/api/jobs/' + encodeURIComponent(id));
  const job = data.job;
  const path = '/api/jobs/' + encodeURIComponent(job.id);
  const controls = [];
  if (may('operator')) {
    controls.push(data.revoked
      ? button('activate', 'Activate', (e) => act(e.target, () => api('POST', path + '/activate')))
      : button('revoke', 'Revoke', (e) => act(e.target, () => api('POST', path + '/revoke')), 'danger'));
    const version = el('input', { id: 'pin-version', value: data.pinned ? data.pinned.version : job.version, size: 10 });
    controls.push(version, button('pin', 'Pin', (e) => act(e.target, () => api('POST', path + '/pin', { version: version.value.trim() }))));
    if (data.pinned) controls.push(button('unpin', 'Unpin', (e) => act(e.target, () => api('POST', path + '/unpin'))));
    controls.push(el('a', { id: 'run-link', class: 'button primary', href: '#/run/' + encodeURIComponent(job.id) }, 'Run…'));
  }
  view.append(
    el('h1', {}, job.id, ' ', job.version, ' ', data.revoked ? badge('revoked') : badge('active'),
      data.pinned ? badge('pinned at ' + data.pinned.version, 'pinned') : null),
    job.description ? el('p', {}, job.description) : null,
    el('div', { class: 'controls' }, controls),
    el('div', { id: 'action-error' }),
    section('Manifest', el('pre', { id: 'job-yaml' }, data.yaml || JSON.stringify(job, null, 2))));
}

// ---- run -----------------------------------------------------------------

async function runPage(view, [preset]) {
  const [jobs, agents] = await Promise.all([api('GET', '/api/jobs'), api('GET', '/api/agents')]);
  jobs.sort((x, y) => x.id.localeCompare(y.id));
  const groups = [...new Set(agents.flatMap((a) => a.groups || []))].sort();
  const job = el('select', { id: 'run-job' }, jobs.map((j) => el('option', { value: j.id, selected: j.id === preset }, j.id + ' ' + j.version)));
  const kind = (value, label, checked) => el('label', { class: 'inline' },
    el('input', { type: 'radio', name: 'target', value, id: 'target-' + value, checked }), ' ', label);
  const groupBoxes = groups.map((g) => el('label', { class: 'inline' }, el('input', { type: 'checkbox', class: 'group-pick', value: g }), ' ', g));
  const pcSearch = el('input', { id: 'pc-search', type: 'search', placeholder: 'Search pcs' });
  const pcList = el('div', { id: 'pc-list', class: 'picklist' }, agents.map((a) => el('label', { class: 'inline', 'data-pc': a.pc_id },
    el('input', { type: 'checkbox', class: 'pc-pick', value: a.pc_id }), ' ', a.pc_id, ' ', a.online ? badge('online') : badge('offline'))));
  pcSearch.addEventListener('input', () => {
    const needle = pcSearch.value.trim().toLowerCase();
    for (const label of pcList.children) label.hidden = needle !== '' && !label.dataset.pc.toLowerCase().includes(needle);
  });
  const batch = el('input', { id: 'rollout-batch', placeholder: 'e.g. 10 or 25%', size: 10 });
  const maxErrors = el('input', { id: 'rollout-max-errors', placeholder: 'e.g. 1 or 5%', size: 10 });
  const review = el('div', { id: 'run-review' });
  const amount = (text) => (/^\d+$/.test(text) ? Number(text) : text);
  const request = () => {
    const target = view.querySelector('input[name=target]:checked').value;
    const body = { all: target === 'all', groups: [], pcs: [] };
    if (target === 'groups') body.groups = [...view.querySelectorAll('.group-pick:checked')].map((c) => c.value);
    if (target === 'pcs') body.pcs = [...view.querySelectorAll('.pc-pick:checked')].map((c) => c.value);
    const rollout = {};
    if (batch.value.trim()) rollout.batch = amount(batch.value.trim());
    if (maxErrors.value.trim()) rollout.max_errors = amount(maxErrors.value.trim());
    if (Object.keys(rollout).length) body.rollout = rollout;
    return body;
  };
  const describe = (body) => body.all ? 'every agent (' + agents.filter((a) => a.online).length + ' online now)'
    : body.groups.length ? 'groups ' + body.groups.join(', ') : body.pcs.length ? body.pcs.length + ' pc(s): ' + body.pcs.join(', ') : 'nothing';
  const confirmRun = async (body, event) => {
    event.target.disabled = true;
    try {
      const row = await api('POST', '/api/jobs/' + encodeURIComponent(job.value) + '/exec', body);
      location.hash = '#/exec/' + encodeURIComponent(row.exec_id);
    } catch (error) {
      review.replaceChildren(notice(error.message));
    }
  };
  const check = () => {
    const body = request();
    if (!body.all && body.groups.length === 0 && body.pcs.length === 0) {
      review.replaceChildren(notice('Pick the targets: every agent, some groups or some pcs.'));
      return;
    }
    review.replaceChildren(el('div', { class: 'card confirm' },
      el('p', {}, 'Run ', el('b', {}, job.value), ' on ', describe(body),
        body.rollout ? ' in a rollout (' + JSON.stringify(body.rollout) + ')' : '', '?'),
      button('run-confirm', 'Confirm and run', (e) => confirmRun(body, e), 'primary'), ' ',
      button('run-cancel', 'Cancel', () => review.replaceChildren())));
  };
  view.append(el('h1', {}, 'Run a job'),
    el('div', { class: 'card' },
      el('label', { for: 'run-job' }, 'Job'), job,
      el('fieldset', {}, el('legend', {}, 'Targets'), kind('all', 'Every agent', true), kind('groups', 'Groups'), kind('pcs', 'PCs'),
        el('div', { class: 'picklist' }, groupBoxes.length ? groupBoxes : el('span', { class: 'muted' }, 'No agent announced a group.')),
        pcSearch, pcList),
      el('details', {}, el('summary', {}, 'Rollout options'),
        el('label', { for: 'rollout-batch' }, 'Batch size'), batch,
        el('label', { for: 'rollout-max-errors' }, 'Halt after errors'), maxErrors),
      button('run-check', 'Review…', check, 'primary')),
    review);
}

// ---- executions ----------------------------------------------------------

async function executionsPage(view) {
  const rows = await api('GET', '/api/executions?limit=100');
  view.append(el('h1', {}, 'Executions'),
    table('executions-table', ['Execution', 'Job', 'Status', 'Targets', 'OK', 'Failed', 'Created'], rows.map((r) => el('tr', {},
      el('td', {}, el('a', { href: '#/exec/' + encodeURIComponent(r.exec_id) }, r.exec_id)),
      el('td', {}, r.job_id + ' ' + r.version),
      el('td', {}, badge(r.status)),
      el('td', {}, r.targeted), el('td', {}, r.succeeded), el('td', {}, r.failed),
      el('td', {}, when(r.created_at))))));
}

// The live view: a long-poll on the execution (the server answers when its
// status or counters change), then its results; no timer.
async function executionPage(view, [id, openPc], alive) {
  const path = '/api/executions/' + encodeURIComponent(id);
  const status = el('span', { id: 'exec-status' });
  const counts = el('div', { class: 'counts', id: 'exec-counts' });
  const progress = el('progress', { id: 'exec-progress', max: 1, value: 0 });
  const body = el('tbody');
  const output = el('div', { id: 'output' });
  const kill = may('operator') ? button('kill', 'Kill', (e) => act(e.target, () => api('POST', path + '/kill')), 'danger') : null;
  const heading = el('h1', {}, 'Execution ', id);
  const seen = new Map();
  let selected = openPc || null;
  const showOutput = (row) => {
    selected = row.pc_id;
    for (const tr of body.children) tr.classList.toggle('selected', tr.dataset.pc === selected);
    output.replaceChildren(section('Output of ' + row.pc_id,
      el('p', { class: 'muted' }, 'exit ' + row.exit_code + (row.skipped ? ' (skipped)' : '') + ' · attempts ' + row.attempts + ' · ' + when(row.finished_at)),
      el('h3', {}, 'stdout'), el('pre', { id: 'stdout' }, row.stdout),
      el('h3', {}, 'stderr'), el('pre', { id: 'stderr' }, row.stderr)));
  };
  const paint = (row, results) => {
    heading.replaceChildren('Execution ', id, ' · ', row.job_id, ' ', row.version);
    status.replaceChildren(badge(row.status));
    const answered = row.succeeded + row.failed + row.skipped;
    counts.replaceChildren(
      ...[['targeted', row.targeted], ['started', row.started], ['succeeded', row.succeeded], ['failed', row.failed], ['skipped', row.skipped]]
        .map(([name, n]) => el('div', {}, el('b', { id: 'count-' + name }, n), ' ' + name)));
    progress.max = Math.max(row.targeted, 1);
    progress.value = answered;
    if (kill) kill.hidden = FINISHED.includes(row.status);
    for (const r of results) {
      const cells = [
        el('td', {}, r.pc_id),
        el('td', {}, r.skipped ? badge('skipped', 'skipped') : badge(String(r.exit_code), r.exit_code === 0 ? 'ok' : 'failed')),
        el('td', {}, when(r.finished_at)),
        el('td', {}, r.attempts),
      ];
      let tr = seen.get(r.pc_id);
      if (!tr) {
        tr = el('tr', { 'data-pc': r.pc_id, class: 'result clickable', tabindex: 0 });
        seen.set(r.pc_id, tr);
        body.append(tr);
      }
      tr.replaceChildren(...cells);
      tr.onclick = () => showOutput(r);
      tr.onkeydown = (event) => { if (event.key === 'Enter') showOutput(r); };
      if (r.pc_id === selected) showOutput(r);
    }
  };
  view.append(heading, el('div', { class: 'controls' }, status, ' ', kill), el('div', { id: 'action-error' }), counts, progress,
    table('results', ['PC', 'Exit', 'Finished', 'Attempts'], body), output);
  let row = await api('GET', path);
  paint(row, await api('GET', path + '/results'));
  (async () => {
    while (alive()) {
      try {
        row = await api('GET', path + '?after=' + encodeURIComponent(row.fingerprint) + '&wait=30s');
        if (!alive()) return;
        paint(row, await api('GET', path + '/results'));
      } catch (error) {
        if (!alive() || me === null) return;
        document.getElementById('action-error').replaceChildren(notice('Live updates stopped: ' + error.message));
        return;
      }
    }
  })();
}

// ---- schedules, approvals, audit ----------------------------------------

async function schedulesPage(view) {
  const schedules = await api('GET', '/api/schedules');
  const freeze = await api('GET', '/api/freeze');
  const previews = await Promise.all(schedules.map((s) =>
    api('GET', '/api/schedules/' + encodeURIComponent(s.id) + '/preview?n=3').catch(() => [])));
  const pending = await api('GET', '/api/schedule-approvals').catch(() => []);
  view.append(el('h1', {}, 'Schedules'));
  const freezeBox = el('div', { class: 'card', id: 'freeze' });
  if (freeze) {
    freezeBox.append(el('p', {}, badge('frozen'), freeze.until ? ' until ' + when(freeze.until) : ' until lifted', freeze.reason ? ' · ' + freeze.reason : ''));
    if (may('operator')) freezeBox.append(button('freeze-clear', 'Lift the freeze', (e) => act(e.target, () => api('DELETE', '/api/freeze'))));
  } else {
    freezeBox.append(el('p', {}, 'Scheduled fires go out as planned.'));
    if (may('operator')) {
      const reason = el('input', { id: 'freeze-reason', placeholder: 'Reason' });
      const until = el('input', { id: 'freeze-until', type: 'datetime-local' });
      freezeBox.append(reason, ' until ', until, ' ', button('freeze-set', 'Freeze the fleet', (e) => act(e.target, () =>
        api('POST', '/api/freeze', { reason: reason.value.trim() || null, until: until.value ? new Date(until.value).toISOString() : null })), 'danger'));
    }
  }
  view.append(freezeBox, el('div', { id: 'action-error' }));
  view.append(table('schedules-table', ['Schedule', 'Job', 'When', 'Target', 'State', 'Next fires', ''],
    schedules.map((s, n) => el('tr', { 'data-schedule': s.id },
      el('td', {}, s.id), el('td', {}, s.job_id), el('td', {}, el('code', {}, JSON.stringify(s.when))),
      el('td', {}, s.target.all ? 'all' : [...(s.target.groups || []).map((g) => 'group ' + g), ...(s.target.pcs || [])].join(', ')),
      el('td', {}, s.enabled ? badge('enabled', 'ok') : badge('disabled')),
      el('td', {}, (previews[n] || []).map((t) => el('div', {}, when(t)))),
      el('td', {}, may('operator') ? (s.enabled
        ? button('disable-' + s.id, 'Disable', (e) => act(e.target, () => api('POST', '/api/schedules/' + encodeURIComponent(s.id) + '/disable')))
        : button('enable-' + s.id, 'Enable', (e) => act(e.target, () => api('POST', '/api/schedules/' + encodeURIComponent(s.id) + '/enable')))) : '')))));
  if (pending.length) {
    view.append(section('Schedules waiting for approval', table('schedule-approvals', ['Schedule', 'Requested by', 'Approvers', ''],
      pending.map((p) => el('tr', {}, el('td', {}, p.schedule_id), el('td', {}, p.requested_by || ''), el('td', {}, (p.approvers || []).join(', ')),
        el('td', {}, may('operator') ? [
          button('approve-schedule-' + (p.schedule_id), 'Approve', (e) => act(e.target, () => api('POST', '/api/schedules/' + encodeURIComponent(p.schedule_id) + '/approve'))),
          button('deny-schedule-' + (p.schedule_id), 'Deny', (e) => act(e.target, () => api('POST', '/api/schedules/' + encodeURIComponent(p.schedule_id) + '/deny')), 'danger')] : ''))))));
  }
}

async function approvalsPage(view) {
  const requests = await api('GET', '/api/approvals');
  view.append(el('h1', {}, 'Approvals'), el('div', { id: 'action-error' }));
  if (requests.length === 0) {
    view.append(el('p', { class: 'muted', id: 'no-approvals' }, 'Nothing is waiting for approval.'));
    return;
  }
  view.append(table('approvals-table', ['Execution', 'Job', 'Target', 'Requested by', 'Approvals', ''], requests.map((r) => {
    const x = r.execution;
    const path = '/api/executions/' + encodeURIComponent(x.exec_id);
    const reason = el('input', { class: 'deny-reason', placeholder: 'Reason to deny' });
    return el('tr', { 'data-exec': x.exec_id },
      el('td', {}, el('a', { href: '#/exec/' + encodeURIComponent(x.exec_id) }, x.exec_id)),
      el('td', {}, x.job_id + ' ' + x.version),
      el('td', {}, el('code', {}, x.target)),
      el('td', {}, r.requested_by),
      el('td', {}, r.approvers.length + ' of ' + r.rule.approvals + (r.approvers.length ? ' (' + r.approvers.join(', ') + ')' : '')),
      el('td', {}, may('operator') ? [
        button('approve-' + x.exec_id, 'Approve', (e) => act(e.target, () => api('POST', path + '/approve')), 'primary'), ' ',
        reason, ' ',
        button('deny-' + x.exec_id, 'Deny', (e) => act(e.target, () => api('POST', path + '/deny', { reason: reason.value.trim() || null })), 'danger')] : ''));
  })));
}

async function auditPage(view) {
  const since = new Date(Date.now() - 7 * 86400 * 1000).toISOString();
  const [entries, chain] = await Promise.all([
    api('GET', '/api/audit?limit=0&since=' + encodeURIComponent(since)),
    api('GET', '/api/audit/verify'),
  ]);
  const newest = entries.slice(-300).reverse();
  view.append(el('h1', {}, 'Audit'),
    el('p', { id: 'audit-chain' }, chain.ok
      ? [badge('chain intact', 'ok'), ' ', chain.entries + ' entries verified']
      : [badge('chain broken', 'failed'), ' at entry ', chain.seq, ': ', chain.reason]),
    el('p', { class: 'muted' }, 'The newest ' + newest.length + ' entries of the last 7 days.'),
    table('audit-table', ['#', 'When', 'Actor', 'Action', 'Target', 'Outcome', 'From'], newest.map((a) => el('tr', { 'data-action': a.action },
      el('td', {}, a.seq), el('td', {}, when(a.at)), el('td', {}, a.actor), el('td', {}, a.action),
      el('td', {}, a.target || ''), el('td', {}, a.outcome ? badge(a.outcome, a.outcome === 'ok' ? 'ok' : 'failed') : ''),
      el('td', {}, a.source ? a.source.kind + (a.source.ip ? ' ' + a.source.ip : '') : '')))));
}
