// The License Usage page: polls the admin JSON API and renders it. No framework, no build step.
// Everything user-controlled is inserted as text (textContent), never as markup.
'use strict';

(() => {
  const POLL_MS = 3000;
  const REPORT_POLL_MS = 60000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const $ = (sel) => document.querySelector(sel);

  const state = {
    me: null,
    sessions: [],
    usage: [],
    queue: [],
    selected: new Set(),
    filters: { user: '', product: '', license: '' },
    // '' keeps the API's order; 'last_input': no input at all first, then oldest input first,
    // so whoever is really away tops the list.
    sort: '',
    report: null,
  };

  function status(msg, isError) {
    const el = $('#status');
    el.textContent = msg || '';
    el.className = isError ? 'error' : '';
  }

  async function api(method, path, body) {
    const opts = { method, headers: {}, credentials: 'same-origin' };
    if (method !== 'GET' && state.me) opts.headers['X-CSRF-Token'] = state.me.csrf_token || '';
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    if (r.status === 401) {
      location.href = '/login';
      throw new Error('not logged in');
    }
    const ct = r.headers.get('content-type') || '';
    const data = ct.includes('json') ? await r.json() : await r.text();
    return { status: r.status, ok: r.ok, data };
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  const pad = (n) => String(n).padStart(2, '0');
  function when(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    const today = new Date();
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function inSeconds(iso) {
    return Math.max(0, Math.ceil((Date.parse(iso) - Date.now()) / 1000));
  }

  // Sessions that have expired since the last poll are dropped at once: an expired session is
  // never shown as active, even between polls.
  function live(s) {
    const now = Date.now();
    if (s.expires_at && Date.parse(s.expires_at) <= now) return false;
    if (s.ending_at && Date.parse(s.ending_at) <= now) return false;
    return true;
  }

  function shown() {
    const f = state.filters;
    const user = f.user.trim().toLowerCase();
    const rows = state.sessions.filter((s) => live(s)
      && (!user || (s.user || '').toLowerCase().includes(user))
      && (!f.product || s.product === f.product)
      && (!f.license || s.license_type === f.license));
    if (state.sort === 'last_input') {
      const t = (s) => (s.last_input ? Date.parse(s.last_input) : 0);
      rows.sort((a, b) => t(a) - t(b) || (a.user || '').localeCompare(b.user || ''));
    }
    return rows;
  }

  const mayControl = (s) => state.me && state.me.permission === 'control';
  const owns = (s) => state.me && s.user === state.me.name && state.me.permission === 'control';

  function renderPools() {
    const tbody = $('#pools tbody');
    tbody.replaceChildren();
    for (const u of state.usage) {
      const tr = el('tr', { 'data-product': u.product, 'data-pool': u.pool });
      tr.append(el('td', {}, u.product), el('td', {}, u.pool));
      for (const [cls, v] of [['capacity', u.capacity], ['in-use', u.in_use], ['free', u.available],
        ['standby', u.standby], ['ending', u.ending], ['peak', u.peak], ['denied', u.denied],
        ['waiting', u.queue_length || 0]]) {
        tr.append(el('td', { class: `num ${cls}` }, v));
      }
      tbody.append(tr);
    }
  }

  function setOptions(select, values) {
    const current = select.value;
    const keep = [...select.options].slice(0, 1);
    select.replaceChildren(...keep);
    for (const v of values) select.append(el('option', { value: v }, v));
    select.value = values.includes(current) ? current : '';
  }

  function renderFilters() {
    const products = [...new Set([...state.usage.map((u) => u.product),
      ...state.sessions.map((s) => s.product)])].sort();
    setOptions($('#f-product'), products);
    state.filters.product = $('#f-product').value;
    const p = state.filters.product;
    const pools = [...new Set([...state.usage.filter((u) => !p || u.product === p).map((u) => u.pool),
      ...state.sessions.filter((s) => !p || s.product === p).map((s) => s.license_type)])].sort();
    setOptions($('#f-license'), pools);
    state.filters.license = $('#f-license').value;
  }

  // Rows are kept per session id and updated in place, so a poll never replaces the checkbox
  // or button under the user's pointer.
  const rowsById = new Map();

  function makeRow(id) {
    const tr = el('tr', { 'data-id': id });
    const box = el('input', { type: 'checkbox', class: 'select', 'data-id': id });
    box.addEventListener('change', () => {
      if (box.checked) state.selected.add(id); else state.selected.delete(id);
      tr.classList.toggle('selected', box.checked);
      renderSelection();
    });
    const first = el('td');
    first.append(box);
    tr.append(first);
    const cells = {};
    for (const k of ['user', 'product', 'license', 'client', 'device', 'state', 'started', 'activity',
      'request', 'input', 'heartbeat', 'expires', 'actions']) {
      cells[k] = el('td', { class: k });
      tr.append(cells[k]);
    }
    cells.device.classList.add('muted');
    return { tr, box, cells, actionsKey: '' };
  }

  function updateRow(r, s) {
    const { tr, box, cells } = r;
    tr.dataset.user = s.user || '';
    tr.dataset.state = s.state;
    box.setAttribute('aria-label', `select session of ${s.user || 'unknown user'}`);
    box.disabled = !mayControl(s) || s.state === 'ending';
    box.checked = state.selected.has(s.id);
    tr.classList.toggle('selected', box.checked);
    cells.user.textContent = s.user || '(unknown)';
    cells.product.textContent = s.product;
    cells.license.textContent = s.license_type;
    cells.client.textContent = s.client;
    cells.device.textContent = s.device || '–';
    let label = s.state;
    if (s.state === 'ending' && s.ending_at) label = `ending in ${inSeconds(s.ending_at)} s`;
    const badge = cells.state.firstChild || cells.state.appendChild(el('span'));
    badge.className = `state state-${s.state}`;
    badge.textContent = label;
    cells.state.title = s.ended_by ? `ended by ${s.ended_by}` : '';
    cells.started.textContent = when(s.started_at);
    cells.activity.textContent = when(s.last_activity);
    cells.request.textContent = when(s.last_request);
    cells.input.textContent = when(s.last_input);
    cells.heartbeat.textContent = when(s.last_heartbeat);
    cells.expires.textContent = when(s.ending_at || s.expires_at);
    let op = '';
    if (owns(s) && (s.state === 'active' || s.state === 'standby')) op = 'pause';
    else if (owns(s) && s.state === 'paused') op = 'resume';
    if (op !== r.actionsKey) {
      r.actionsKey = op;
      cells.actions.replaceChildren();
      if (op) {
        const b = el('button', { type: 'button', class: op, 'data-id': s.id }, op === 'pause' ? 'Pause' : 'Resume');
        b.addEventListener('click', () => pauseResume(op, s.id));
        cells.actions.append(b);
      }
    }
  }

  function renderSessions() {
    const rows = shown();
    const ids = new Set(rows.map((s) => s.id));
    // Only what is on screen can be selected: a filter or an expiry drops the rest.
    for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
    const tbody = $('#sessions tbody');
    for (const [id, r] of rowsById) {
      if (!ids.has(id)) {
        r.tr.remove();
        rowsById.delete(id);
      }
    }
    rows.forEach((s, i) => {
      let r = rowsById.get(s.id);
      if (!r) {
        r = makeRow(s.id);
        rowsById.set(s.id, r);
      }
      updateRow(r, s);
      if (tbody.children[i] !== r.tr) tbody.insertBefore(r.tr, tbody.children[i] || null);
    });
    $('#no-sessions').hidden = rows.length > 0;
    renderSelection();
  }

  function renderSelection() {
    const n = state.selected.size;
    $('#end-selected').disabled = n === 0;
    $('#selection').textContent = n ? `${n} selected` : '';
    const boxes = [...document.querySelectorAll('#sessions input.select:not(:disabled)')];
    $('#select-all').checked = boxes.length > 0 && boxes.every((b) => b.checked);
  }

  // Each pool's line in order; the user is the name as typed at the login, so it goes in as
  // text like every other user name. Rows are kept per ticket id and updated in place, so a
  // poll never replaces the Remove button under the pointer.
  const queueRows = new Map();

  function queueRow(t) {
    const tr = el('tr', { 'data-id': t.id });
    const cells = {};
    for (const k of ['product', 'pool', 'position', 'user', 'client', 'since', 'state', 'ready-until', 'actions']) {
      cells[k] = el('td', { class: k });
      tr.append(cells[k]);
    }
    cells.position.classList.add('num');
    cells.state.append(el('span'));
    if (state.me && state.me.permission === 'control') {
      const b = el('button', { type: 'button', class: 'remove danger', 'data-id': t.id }, 'Remove');
      b.addEventListener('click', () => removeTicket(tr.ticket));
      cells.actions.append(b);
    }
    return { tr, cells };
  }

  function renderQueue() {
    const tbody = $('#queue tbody');
    const ids = new Set(state.queue.map((t) => t.id));
    for (const [id, r] of queueRows) {
      if (!ids.has(id)) {
        r.tr.remove();
        queueRows.delete(id);
      }
    }
    state.queue.forEach((t, i) => {
      let r = queueRows.get(t.id);
      if (!r) {
        r = queueRow(t);
        queueRows.set(t.id, r);
      }
      const { tr, cells } = r;
      tr.ticket = t;
      Object.assign(tr.dataset, { product: t.product, pool: t.pool, state: t.state });
      cells.product.textContent = t.product;
      cells.pool.textContent = t.pool;
      cells.position.textContent = String(t.position);
      cells.user.textContent = t.user || '(unknown)';
      cells.client.textContent = t.client;
      cells.since.textContent = when(t.joined_at);
      const badge = cells.state.firstChild;
      badge.className = `state state-${t.state}`;
      badge.textContent = t.state;
      cells['ready-until'].textContent = t.ready_until ? when(t.ready_until) : '–';
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    $('#no-queue').hidden = state.queue.length > 0;
  }

  async function removeTicket(t) {
    if (!window.confirm(`Remove ${t.user || '(unknown)'} from the line for ${t.product} / ${t.pool}? Their page will say the wait has ended.`)) return;
    const r = await api('POST', `/api/queue/${encodeURIComponent(t.id)}/remove`);
    if (r.ok) status(`${t.user || 'The ticket'} was removed from the line.`);
    else status(`not removed: ${(r.data && r.data.error) || r.status}`, true);
    await refresh();
  }

  function render() {
    renderPools();
    renderQueue();
    renderFilters();
    renderSessions();
  }

  async function refresh() {
    try {
      const [sessions, usage, queue] = await Promise.all([api('GET', '/api/sessions'), api('GET', '/api/usage'),
        api('GET', '/api/queue')]);
      if (!sessions.ok || !usage.ok || !queue.ok) {
        const failed = [sessions, usage, queue].find((r) => !r.ok);
        status((failed.data && failed.data.error) || 'could not load', true);
        return;
      }
      state.sessions = sessions.data;
      state.usage = usage.data;
      state.queue = queue.data;
      render();
      $('#updated').textContent = `updated ${when(new Date().toISOString())}`;
    } catch (e) {
      if (String(e.message) !== 'not logged in') status(`could not reach the gateway: ${e.message}`, true);
    }
  }

  async function endSelected(grace) {
    const ids = [...state.selected];
    if (!ids.length) return;
    const r = await api('POST', '/api/sessions/end', { ids, grace_seconds: grace });
    if (r.ok) {
      state.selected.clear();
      const n = r.data.ended.filter((e) => e.result === 'ending').length;
      status(grace > 0
        ? `${n} session(s) end in ${grace} s.`
        : `${n} session(s) ended; their seats are free.`);
    } else {
      status(`not ended: ${(r.data && r.data.error) || r.status}`, true);
    }
    await refresh();
  }

  async function pauseResume(op, id) {
    const r = await api('POST', `/api/sessions/${op}`, { ids: [id] });
    if (r.ok) status(op === 'pause' ? 'Session paused: its seat is free.' : 'Session resumed.');
    else if (r.status === 409 && op === 'resume') status('No seat is free to resume this session; try again later.', true);
    else status(`${op} failed: ${(r.data && r.data.error) || r.status}`, true);
    await refresh();
  }

  // ---- reports ----

  function localInput(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function reportRange() {
    const to = $('#r-to').value ? Date.parse($('#r-to').value) : Date.now();
    const from = $('#r-from').value ? Date.parse($('#r-from').value) : to - 24 * 3600e3;
    return { from: Math.floor(from / 1000), to: Math.ceil(to / 1000) };
  }

  function drawChart(rep, from, to) {
    const W = 720; const H = 230; const L = 34; const R = 8; const T = 24; const B = 26;
    const h0 = Math.floor(from / 3600); const h1 = Math.ceil(to / 3600);
    const hours = Math.max(1, h1 - h0);
    const products = [...new Set(rep.rows.map((r) => r.product))].sort();
    // One step of headroom, so a full pool's capacity line stays visible above its bar.
    const maxY = 1 + Math.max(0, ...rep.rows.map((r) => Math.max(r.peak_in_use, r.capacity)));
    const x = (h) => L + ((W - L - R) * h) / hours;
    const y = (v) => H - B - ((H - T - B) * v) / maxY;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Peak seats in use per hour' });
    const step = Math.max(1, Math.ceil(maxY / 5));
    for (let v = 0; v <= maxY; v += step) {
      root.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg('text', { x: L - 4, y: y(v) + 3, 'text-anchor': 'end' }, v));
    }
    root.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    const every = Math.max(1, Math.ceil(hours / 12));
    for (let h = 0; h < hours; h += every) {
      const d = new Date((h0 + h) * 3600e3);
      root.append(svg('text', { x: x(h) + 2, y: H - B + 14 }, `${pad(d.getHours())}:00`));
    }
    const slot = (W - L - R) / hours;
    const bw = Math.max(1, (slot * 0.8) / Math.max(1, products.length));
    for (const r of rep.rows) {
      const h = Math.floor(Date.parse(r.hour) / 3600e3) - h0;
      if (h < 0 || h >= hours) continue;
      const i = products.indexOf(r.product);
      const bx = x(h) + slot * 0.1 + i * bw;
      const bar = svg('rect', { class: `bar p${i % 6}`, x: bx, y: y(r.peak_in_use), width: bw,
        height: Math.max(0, H - B - y(r.peak_in_use)), 'data-product': r.product, 'data-hour': r.hour });
      bar.append(svg('title', {}, `${r.product} ${when(r.hour)}: peak ${r.peak_in_use} of ${r.capacity}, ${r.denials} denied`));
      root.append(bar);
      root.append(svg('line', { class: `cap p${i % 6}`, x1: bx, x2: bx + bw, y1: y(r.capacity), y2: y(r.capacity) }));
    }
    products.forEach((p, i) => {
      root.append(svg('rect', { class: `p${i % 6}`, x: L + 8 + i * 110, y: 4, width: 10, height: 10 }));
      root.append(svg('text', { x: L + 22 + i * 110, y: 13 }, p));
    });
    $('#chart').replaceChildren(root);
  }

  function renderReport(rep, from, to) {
    drawChart(rep, from, to);
    const tbody = $('#report tbody');
    tbody.replaceChildren();
    for (const r of [...rep.rows].reverse()) {
      const users = Object.entries(r.user_hours).map(([u, h]) => `${u || '(unknown)'} ${h} h`).join(', ');
      const tr = el('tr', { 'data-product': r.product });
      tr.append(el('td', {}, when(r.hour)), el('td', {}, r.product), el('td', { class: 'num' }, r.peak_in_use),
        el('td', { class: 'num' }, r.capacity), el('td', { class: 'num' }, r.denials),
        el('td', { class: 'num' }, `${r.checks} (${r.checks_failed})`),
        el('td', { class: 'num peak-line' }, r.peak_queue_length || 0),
        el('td', { class: 'num median-wait' }, r.median_wait_seconds == null ? '–' : `${r.median_wait_seconds} s (${r.queue_admitted})`),
        el('td', {}, users || '–'));
      tbody.append(tr);
    }
  }

  async function loadReport() {
    const { from, to } = reportRange();
    if (!(from < to)) {
      status('The report range must start before it ends.', true);
      return;
    }
    $('#r-csv').href = `/api/reports?from=${from}&to=${to}&format=csv`;
    try {
      const r = await api('GET', `/api/reports?from=${from}&to=${to}`);
      if (!r.ok) {
        status(`report: ${(r.data && r.data.error) || r.status}`, true);
        return;
      }
      state.report = r.data;
      renderReport(r.data, from, to);
    } catch (e) {
      if (String(e.message) !== 'not logged in') status(`report: ${e.message}`, true);
    }
  }

  // ---- wiring ----

  async function start() {
    const me = await api('GET', '/api/me');
    if (!me.ok) {
      status('could not load your account', true);
      return;
    }
    state.me = me.data;
    $('#me').textContent = `${me.data.name} (${me.data.role}, ${me.data.permission})`;
    if (me.data.permission !== 'control') $('#end-selected').hidden = true;

    $('#logout').addEventListener('click', async () => {
      await api('POST', '/logout');
      location.href = '/login';
    });
    $('#f-user').addEventListener('input', (e) => { state.filters.user = e.target.value; renderSessions(); });
    $('#f-product').addEventListener('change', (e) => { state.filters.product = e.target.value; render(); });
    $('#f-license').addEventListener('change', (e) => { state.filters.license = e.target.value; renderSessions(); });
    $('#f-sort').addEventListener('change', (e) => { state.sort = e.target.value; renderSessions(); });
    $('#filters').addEventListener('reset', () => {
      state.filters = { user: '', product: '', license: '' };
      state.sort = '';
      setTimeout(render, 0);
    });
    $('#select-all').addEventListener('change', (e) => {
      for (const b of document.querySelectorAll('#sessions input.select:not(:disabled)')) {
        if (e.target.checked) state.selected.add(b.dataset.id); else state.selected.delete(b.dataset.id);
      }
      renderSessions();
    });
    $('#end-selected').addEventListener('click', () => {
      const picked = state.sessions.filter((s) => state.selected.has(s.id));
      if (!picked.length) return;
      const users = [...new Set(picked.map((s) => s.user || '(unknown)'))].join(', ');
      $('#confirm-text').textContent = `End ${picked.length} session(s) of ${users}? Their seats are freed after the notice.`;
      $('#confirm').returnValue = '';
      $('#confirm').showModal();
    });
    $('#confirm').addEventListener('close', () => {
      if ($('#confirm').returnValue === 'ok') endSelected(Number($('#grace').value));
    });
    $('#report-form').addEventListener('submit', (e) => { e.preventDefault(); loadReport(); });

    await refresh();
    await loadReport();
    setInterval(() => { if ($('#auto-refresh').checked) refresh(); }, POLL_MS);
    setInterval(() => { if ($('#auto-refresh').checked) loadReport(); }, REPORT_POLL_MS);
    // Countdowns and expiry between polls.
    setInterval(renderSessions, 1000);
  }

  const now = Date.now();
  document.addEventListener('DOMContentLoaded', () => {
    $('#r-to').value = '';
    $('#r-from').value = localInput(now - 24 * 3600e3);
    start().catch((e) => status(String(e.message), true));
  });
})();
