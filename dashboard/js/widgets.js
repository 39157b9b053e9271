// Pieces more than one room shows: status badges, a GPU's line, a job's progress bar.

import { bar, h } from './dom.js';
import { fmtUsage, num, ratioPercent, str, text } from './state/format.js';
import { HOT_C } from './state/live.js';
import { progressPercent } from './state/studio.js';

/** A node's status ('online', 'stale', 'offline', 'unknown'). */
export function nodeBadge(status, node) {
  const b = h('span', 'badge badge-' + status, status === 'unknown' && node ? text(node.status) : status);
  if (status === 'offline' && node && str(node.deregister_reason)) b.title = 'reason: ' + str(node.deregister_reason);
  return b;
}

/** A render job's status. */
export function jobBadge(status) {
  const s = str(status) || 'unknown';
  return h('span', 'badge badge-job status-' + s, s);
}

export function simBadge() {
  const b = h('span', 'badge-simulated', 'SIMULATED GPU');
  b.title = 'rendered by the simulated backend: a stand-in image, not a real GPU render';
  return b;
}

/** One GPU (a row of `gpuRows`): name, VRAM used/total with a bar, utilisation, temperature. */
export function gpuLine(gpu, source) {
  const line = h('div', 'gpu');
  line.dataset.gpuIndex = String(gpu.index);
  const head = h('div', 'gpu-head');
  head.appendChild(h('span', 'gpu-name', gpu.name));
  if (gpu.simulated) head.appendChild(h('span', 'tag tag-sim', 'SIMULATED'));
  line.appendChild(head);
  const stats = h('div', 'gpu-stats');
  stats.appendChild(h('span', 'gpu-vram', fmtUsage(gpu.used, gpu.total)));
  stats.appendChild(h('span', 'gpu-util', gpu.util === null ? '\u2014' : gpu.util.toFixed(0) + '%'));
  const hot = gpu.temp !== null && gpu.temp >= HOT_C;
  stats.appendChild(h('span', 'gpu-temp' + (hot ? ' hot' : ''), gpu.temp === null ? '\u2014' : gpu.temp.toFixed(0) + '\u00b0C'));
  line.appendChild(stats);
  line.appendChild(bar(ratioPercent(gpu.used, gpu.total)));
  const tip = [];
  if (gpu.vendor) tip.push('vendor: ' + gpu.vendor);
  if (gpu.info && str(gpu.info.uuid)) tip.push(str(gpu.info.uuid));
  if (gpu.info && str(gpu.info.driver_version)) tip.push('driver ' + str(gpu.info.driver_version));
  if (gpu.power !== null) tip.push('power ' + gpu.power.toFixed(0) + ' W');
  if (str(source)) tip.push('source: ' + str(source));
  if (tip.length) line.title = tip.join('\n');
  return line;
}

/** An empty progress bar; `setProgress` fills it. Its data-value / data-max carry the numbers. */
export function progressBar(progress) {
  const el = h('div', 'progress');
  el.appendChild(h('div', 'progress-fill'));
  el.appendChild(h('span', 'progress-label'));
  setProgress(el, progress);
  return el;
}

export function setProgress(el, progress) {
  const pct = progressPercent(progress);
  const fill = el.querySelector('.progress-fill');
  const label = el.querySelector('.progress-label');
  if (pct === null) {
    el.dataset.value = '';
    el.dataset.max = '';
    el.classList.add('progress-empty');
    fill.style.width = '0';
    label.textContent = '';
    return;
  }
  el.dataset.value = String(progress.value);
  el.dataset.max = String(progress.max);
  el.classList.remove('progress-empty');
  fill.style.width = pct.toFixed(1) + '%';
  label.textContent = num(progress.value) + ' / ' + num(progress.max);
  el.title = pct.toFixed(0) + '%';
}
