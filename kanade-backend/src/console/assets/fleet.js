// kanade console: the fleet, a pc, jobs and the run form (see app.js for the
// helpers; every value goes into the page as text).
'use strict';

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
