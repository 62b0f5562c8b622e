// kanade console: executions (the live view), schedules and the freeze,
// approvals and the audit trail (see app.js for the helpers).
'use strict';

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
  let shown = null; // the result whose output is on the page
  // The rows come without output; a pc's is read when it is opened (and
  // again only if its result changed).
  const showOutput = async (row) => {
    selected = row.pc_id;
    for (const tr of body.children) tr.classList.toggle('selected', tr.dataset.pc === selected);
    const key = row.result_id + '|' + row.finished_at + '|' + row.attempts;
    if (shown === key) return;
    shown = key;
    let full = row;
    try {
      full = (await api('GET', path + '/results?pc=' + encodeURIComponent(row.pc_id)))[0] || row;
    } catch (error) {
      if (error.name !== 'AbortError') output.replaceChildren(notice(error.message));
      return;
    }
    if (selected !== row.pc_id) return;
    output.replaceChildren(section('Output of ' + full.pc_id,
      el('p', { class: 'muted' }, 'exit ' + full.exit_code + (full.skipped ? ' (skipped)' : '') + ' · attempts ' + full.attempts + ' · ' + when(full.finished_at)),
      el('h3', {}, 'stdout'), el('pre', { id: 'stdout' }, full.stdout),
      el('h3', {}, 'stderr'), el('pre', { id: 'stderr' }, full.stderr)));
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
    if (kill) kill.hidden = row.over;
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
  paint(row, await api('GET', path + '/results?output=false'));
  // Results are read again only when the execution changed; once it is
  // over and a whole wait passes without a change, the view stops asking.
  (async () => {
    while (alive()) {
      try {
        const before = row.fingerprint;
        const asked = Date.now();
        row = await api('GET', path + '?after=' + encodeURIComponent(before) + '&wait=30s');
        if (!alive()) return;
        if (row.fingerprint === before) {
          if (row.over) return;
          // Answered early without a change (the server is stopping):
          // pause before asking again.
          if (Date.now() - asked < 25000) await new Promise((done) => setTimeout(done, 1000));
          continue;
        }
        paint(row, await api('GET', path + '/results?output=false'));
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
  const freeze = inForce(await api('GET', '/api/freeze'));
  const freezer = may('operator') && !scoped();
  const previews = await Promise.all(schedules.map((s) =>
    api('GET', '/api/schedules/' + encodeURIComponent(s.id) + '/preview?n=3').catch(() => [])));
  const pending = await api('GET', '/api/schedule-approvals').catch(() => []);
  view.append(el('h1', {}, 'Schedules'));
  const freezeBox = el('div', { class: 'card', id: 'freeze' });
  if (freeze) {
    freezeBox.append(el('p', {}, badge('frozen'), freeze.until ? ' until ' + when(freeze.until) : ' until lifted', freeze.reason ? ' · ' + freeze.reason : ''));
    if (freezer) freezeBox.append(button('freeze-clear', 'Lift the freeze', (e) => act(e.target, () => api('DELETE', '/api/freeze'))));
  } else {
    freezeBox.append(el('p', {}, 'Scheduled fires go out as planned.'));
    if (freezer) {
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
          canApprove(p) ? button('approve-schedule-' + (p.schedule_id), 'Approve', (e) => act(e.target, () => api('POST', '/api/schedules/' + encodeURIComponent(p.schedule_id) + '/approve'))) : whyNot(p),
          button('deny-schedule-' + (p.schedule_id), 'Deny', (e) => act(e.target, () => api('POST', '/api/schedules/' + encodeURIComponent(p.schedule_id) + '/deny')), 'danger')] : ''))))));
  }
}

// Whether the signed-in principal may vote on `request`: the rule's role,
// never the requester, once each (approval.rs decides; this only hides the
// button the server would refuse).
function canApprove(request) {
  return may(request.rule.role) && request.requested_by !== me.name && !(request.approvers || []).includes(me.name);
}

function whyNot(request) {
  const reason = request.requested_by === me.name ? 'you requested it'
    : (request.approvers || []).includes(me.name) ? 'you approved it' : 'needs the ' + request.rule.role + ' role';
  return el('span', { class: 'muted' }, reason);
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
        canApprove(r) ? button('approve-' + x.exec_id, 'Approve', (e) => act(e.target, () => api('POST', path + '/approve')), 'primary') : whyNot(r), ' ',
        reason, ' ',
        button('deny-' + x.exec_id, 'Deny', (e) => act(e.target, () => api('POST', path + '/deny', { reason: reason.value.trim() || null })), 'danger')] : ''));
  })));
}

async function auditPage(view) {
  const [newest, chain] = await Promise.all([
    api('GET', '/api/audit?newest=true&limit=300'),
    api('GET', '/api/audit/verify'),
  ]);
  view.append(el('h1', {}, 'Audit'),
    el('p', { id: 'audit-chain' }, chain.ok
      ? [badge('chain intact', 'ok'), ' ', chain.entries + ' entries verified']
      : [badge('chain broken', 'failed'), ' at entry ', chain.seq, ': ', chain.reason]),
    el('p', { class: 'muted' }, 'The newest ' + newest.length + ' entries, newest first.'),
    table('audit-table', ['#', 'When', 'Actor', 'Action', 'Target', 'Outcome', 'From'], newest.map((a) => el('tr', { 'data-action': a.action },
      el('td', {}, a.seq), el('td', {}, when(a.at)), el('td', {}, a.actor), el('td', {}, a.action),
      el('td', {}, a.target || ''), el('td', {}, a.outcome ? badge(a.outcome, a.outcome === 'ok' ? 'ok' : 'failed') : ''),
      el('td', {}, a.source ? a.source.kind + (a.source.ip ? ' ' + a.source.ip : '') : '')))));
}
