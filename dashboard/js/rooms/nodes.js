// Nodes: every agent's machine, live: CPU, RAM, disk, GPUs with VRAM, last heartbeat.
// `#/nodes?node=<id>` points at one node's row.

import { bar, h, hc, reconcile } from '../dom.js';
import { DASH, fmtAge, fmtBytes, fmtPercent, fmtUptime, fmtUsage, isObj, num, ratioPercent, str, text } from '../state/format.js';
import { clockSkew, gpuRows, heartbeatAge, heartbeatTime, nodeStatus, sortedNodeIds } from '../state/live.js';
import { SKEW_WARN_MS } from '../state/overview.js';
import { gpuLine, nodeBadge } from '../widgets.js';

const html = `
<section class="panel panel-nodes" aria-label="Nodes">
  <div class="table-wrap">
    <table id="nodes">
      <thead>
        <tr>
          <th class="col-node" scope="col">Node</th>
          <th class="col-status" scope="col">Status</th>
          <th class="col-cpu" scope="col">CPU</th>
          <th class="col-ram" scope="col">RAM</th>
          <th class="col-disk" scope="col">Disk</th>
          <th class="col-gpus" scope="col">GPUs</th>
          <th class="col-seen" scope="col">Seen</th>
        </tr>
      </thead>
      <tbody></tbody>
    </table>
  </div>
</section>`;

function nodeCell(node) {
  const td = h('td', 'node');
  td.appendChild(h('div', 'node-id', text(node.node_id)));
  const sub = h('div', 'node-sub');
  if (node._provisional) {
    sub.textContent = 'awaiting inventory';
    sub.classList.add('muted');
  } else {
    sub.appendChild(h('span', 'node-host', str(node.hostname) || DASH));
    const os = str(node.os);
    const kernel = str(node.kernel);
    sub.appendChild(h('span', 'node-os', os ? (kernel ? os + ' \u00b7 ' + kernel : os) : DASH));
  }
  td.appendChild(sub);
  const tip = [];
  if (str(node.cpu_model)) tip.push(str(node.cpu_model));
  if (str(node.agent_version)) tip.push('agent ' + str(node.agent_version));
  if (str(node.agent_url)) tip.push(str(node.agent_url));
  if (node.heartbeat && num(node.heartbeat.uptime_secs) !== null) tip.push('up ' + fmtUptime(node.heartbeat.uptime_secs));
  if (tip.length) td.title = tip.join('\n');
  return td;
}

function statusCell(node, now) {
  const s = nodeStatus(node, now);
  const td = hc('td', 'status', [nodeBadge(s, node)]);
  td.dataset.status = s;
  return td;
}

function cpuCell(node) {
  const hb = isObj(node.heartbeat) ? node.heartbeat : {};
  const pct = num(hb.cpu_percent);
  const cores = num(node.cpu_cores);
  const line = hc('div', 'metric-line', [h('span', 'metric-value', fmtPercent(pct)), h('span', 'small', cores === null ? '' : cores + (cores === 1 ? ' core' : ' cores'))]);
  const td = hc('td', 'cpu', [line, bar(pct === null ? null : Math.max(0, Math.min(100, pct)))]);
  const load = num(hb.load_avg_1m);
  if (load !== null) td.title = 'load 1m: ' + load.toFixed(2);
  return td;
}

function usageCell(cls, used, total, gib) {
  const u = num(used);
  const t = num(total);
  const label = gib ? fmtUsage(u, t) : u === null && t === null ? DASH : fmtBytes(u) + ' / ' + fmtBytes(t);
  return hc('td', cls, [h('div', 'metric-line metric-value', label), bar(ratioPercent(u, t))]);
}

function gpusCell(node) {
  const rows = gpuRows(node);
  if (!rows.length) return hc('td', 'gpus', [h('span', 'muted', 'no GPU')]);
  return hc('td', 'gpus', rows.map((g) => gpuLine(g, node.gpu_source)));
}

function seenCell(node, now) {
  const td = h('td', 'seen', fmtAge(heartbeatAge(node, now)));
  if (heartbeatTime(node) !== null && node.heartbeat) td.title = 'sampled at ' + text(node.heartbeat.sampled_at) + ' by its own clock';
  const skew = clockSkew(node);
  if (skew !== null && Math.abs(skew) > SKEW_WARN_MS) {
    td.appendChild(h('span', 'badge warn clock-skew', ' clock ' + (skew > 0 ? '+' : '\u2212') + Math.round(Math.abs(skew) / 1000) + ' s'));
  }
  return td;
}

function rowClass(node, now) {
  return 'node-row status-' + nodeStatus(node, now) + (node._provisional ? ' provisional' : '');
}

function renderRow(node, now) {
  const tr = h('tr', rowClass(node, now));
  tr.dataset.nodeId = node.node_id;
  const hb = isObj(node.heartbeat) ? node.heartbeat : null;
  const seq = hb ? num(hb.sample_seq) : null;
  if (seq !== null) tr.dataset.sampleSeq = String(seq);
  tr.appendChild(nodeCell(node));
  tr.appendChild(statusCell(node, now));
  tr.appendChild(cpuCell(node));
  tr.appendChild(usageCell('ram', hb ? hb.memory_used_bytes : null, (hb && num(hb.memory_total_bytes)) || node.memory_total_bytes, true));
  tr.appendChild(usageCell('disk', hb ? hb.disk_used_bytes : null, (hb && num(hb.disk_total_bytes)) || node.disk_total_bytes, false));
  tr.appendChild(gpusCell(node));
  tr.appendChild(seenCell(node, now));
  return tr;
}

function emptyRow() {
  const td = h('td', null);
  td.colSpan = 7;
  td.append('no nodes yet \u2014 start an agent with ');
  td.appendChild(h('code', null, 'nebula agent'));
  return hc('tr', 'empty-row', [td]);
}

function mount(ctx) {
  const tbody = ctx.root.querySelector('#nodes tbody');
  const rows = new Map(); // node_id -> { el: <tr> }
  const state = ctx.live;
  let focus = null; // the node a deep link points at

  function render(changed, full) {
    const now = Date.now();
    if (full) {
      rows.clear();
      tbody.textContent = '';
    }
    const ids = sortedNodeIds(state);
    const empty = tbody.querySelector('tr.empty-row');
    if (ids.length && empty) empty.remove();
    reconcile(tbody, ids, (id) => id, rows, (id, entry) => {
      if (entry && !changed.has(id)) return entry;
      const el = renderRow(state.nodes.get(id), now);
      el.classList.toggle('focused', id === focus);
      return { el: el };
    });
    if (!ids.length && !tbody.querySelector('tr.empty-row')) tbody.appendChild(emptyRow());
  }

  // Ages and stale badges move once a second without rebuilding rows.
  function tick(now) {
    for (const [id, { el: tr }] of rows) {
      const node = state.nodes.get(id);
      if (!node) continue;
      const seen = tr.querySelector('td.seen');
      if (seen) seen.textContent = fmtAge(heartbeatAge(node, now));
      const cell = tr.querySelector('td.status');
      if (cell && cell.dataset.status !== nodeStatus(node, now)) {
        cell.replaceWith(statusCell(node, now));
        tr.className = rowClass(node, now) + (id === focus ? ' focused' : '');
      }
    }
  }

  function show(params) {
    focus = params && params.node ? params.node : null;
    tick(Date.now());
    for (const [id, row] of rows) row.el.classList.toggle('focused', id === focus);
    const row = focus ? rows.get(focus) : null;
    if (row) row.el.scrollIntoView({ block: 'center' });
  }

  // The nav badge counts the nodes that need a look (stale or offline).
  function badge() {
    const now = Date.now();
    const troubled = sortedNodeIds(state).filter((id) => ['stale', 'offline'].indexOf(nodeStatus(state.nodes.get(id), now)) !== -1).length;
    ctx.setBadge(troubled ? String(troubled) : '', 'warn');
  }

  ctx.onChanges((changes) => {
    if (changes.reset || changes.nodes.size > 0) render(changes.nodes, changes.reset);
  });
  render(new Set(), true);
  setInterval(badge, 2000);
  return { show: show, tick: tick };
}

export default {
  id: 'nodes',
  title: 'Nodes',
  subtitle: 'every machine running an agent: load, memory, disk and GPUs, live',
  icon: 'M2 3h12v4H2zM2 9h12v4H2zM4.5 5h1M4.5 11h1',
  css: ['css/nodes.css'],
  html: html,
  mount: mount,
};
