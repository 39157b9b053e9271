// The Studio's gallery: finished images (fetched with the token) with their provenance, a
// "reuse" that loads the parameters into the form, and a "post" that shares one on the streams.

import { acquireArtifact, releaseArtifact } from '../artifacts.js';
import { byIds, closest, emptyNote, h, hc, reconcile } from '../dom.js';
import { studio } from '../render-feed.js';
import { fmtBytes, fmtClock, isObj, num, shortId, str, tailId, text, truncate } from '../state/format.js';
import { isSimulated } from '../state/studio.js';
import { simBadge } from '../widgets.js';

function provenanceRow(dl, label, value, cls, title) {
  const dd = h('dd', cls || null, value);
  if (title) dd.title = title;
  dl.appendChild(h('dt', null, label));
  dl.appendChild(dd);
  return dd;
}

function provenance(job, art) {
  const prov = isObj(job.provenance) ? job.provenance : {};
  const dl = h('dl', 'provenance');
  provenanceRow(dl, 'model', text(prov.model), 'prov-model');
  provenanceRow(dl, 'seed', text(prov.seed), 'prov-seed mono');
  if (str(prov.seed) !== null) dl.dataset.seed = str(prov.seed);
  provenanceRow(dl, 'node', text(prov.node_id), 'prov-node');
  provenanceRow(dl, 'backend', text(prov.backend), 'prov-backend' + (isSimulated(prov.backend) ? ' sim' : ''));
  const trig = isObj(prov.trigger) ? prov.trigger : {};
  provenanceRow(dl, 'trigger', text(trig.source) + (str(trig.reference) ? ' \u00b7 ' + str(trig.reference) : ''), 'prov-trigger');
  provenanceRow(dl, 'workflow', shortId(prov.workflow_hash), 'prov-workflow mono', str(prov.workflow_hash) || undefined);
  const correlation = str(prov.correlation_id || job.correlation_id);
  provenanceRow(dl, 'correlation', tailId(correlation), 'prov-correlation mono', correlation || undefined);
  if (art) provenanceRow(dl, 'image', text(art.width) + '\u00d7' + text(art.height) + ' \u00b7 ' + fmtBytes(art.bytes), 'prov-image', art.sha256 ? 'sha256 ' + art.sha256 : undefined);
  provenanceRow(dl, 'job', tailId(job.job_id), 'prov-job mono', job.job_id);
  return dl;
}

export function mountGallery(actions) {
  const el = byIds({ gallery: 'studio-gallery', count: 'studio-gallery-count' });
  const tiles = new Map(); // job_id -> { el, sha, job }

  function renderTile(job) {
    const artifacts = Array.isArray(job.artifacts) ? job.artifacts.filter(isObj) : [];
    const art = artifacts[0] || null;
    const prov = isObj(job.provenance) ? job.provenance : {};
    const prompt = str(isObj(job.params) ? job.params.prompt : null);
    const fig = h('figure', 'tile');
    fig.dataset.jobId = job.job_id;

    const frame = h('a', 'tile-image');
    frame.target = '_blank';
    frame.rel = 'noopener';
    if (art && num(art.width) && num(art.height)) frame.style.aspectRatio = art.width + ' / ' + art.height;
    frame.appendChild(h('span', 'tile-placeholder', art ? 'loading\u2026' : 'no image'));
    fig.appendChild(frame);

    const time = h('span', 'small muted tile-time', fmtClock(job.finished_at));
    if (str(job.finished_at)) time.title = str(job.finished_at);
    const head = hc('div', 'tile-head', [h('span', 'mode-tag', text(job.mode)), isSimulated(prov.backend) || isSimulated(job.backend) ? simBadge() : null, time]);
    const p = h('div', 'tile-prompt', prompt ? truncate(prompt, 140) : '\u2014');
    if (prompt) p.title = prompt;

    const reuse = h('button', 'btn btn-small', '\u21BA reuse');
    reuse.type = 'button';
    reuse.title = 'load these parameters into the form';
    reuse.dataset.action = 'reuse';
    const download = h('a', 'btn btn-small tile-download', '\u2913 download');
    download.hidden = true;
    if (art && str(art.filename)) download.download = str(art.filename);
    let share = null;
    if (art && str(art.sha256)) {
      share = h('button', 'btn btn-small', '\u2197 post');
      share.type = 'button';
      share.title = 'announce this image on your streams (Stream Bot)';
      share.dataset.action = 'post-artifact';
      share.dataset.sha256 = str(art.sha256);
      share.dataset.needs = 'operator'; // posting needs the operator role
    }
    const more = artifacts.length > 1 ? h('span', 'small muted', '+' + (artifacts.length - 1) + ' more') : null;
    fig.appendChild(hc('figcaption', 'tile-caption', [head, p, provenance(job, art), hc('div', 'tile-actions', [reuse, download, share, more])]));

    const sha = art ? str(art.sha256) : null;
    if (sha) {
      acquireArtifact(sha).then((url) => {
        if (tiles.get(job.job_id) === undefined) return;
        const placeholder = frame.querySelector('.tile-placeholder');
        if (!url) {
          if (placeholder) placeholder.textContent = 'image unavailable';
          return;
        }
        const img = document.createElement('img');
        img.alt = prompt ? truncate(prompt, 120) : 'render ' + tailId(job.job_id);
        img.decoding = 'async';
        if (num(art.width)) img.width = art.width;
        if (num(art.height)) img.height = art.height;
        img.src = url;
        if (placeholder) placeholder.remove();
        frame.appendChild(img);
        frame.href = url;
        download.href = url;
        download.hidden = false;
      });
    }
    return { el: fig, sha: sha, job: job };
  }

  function render() {
    const list = Array.isArray(studio.gallery) ? studio.gallery.filter((j) => isObj(j) && str(j.job_id)) : [];
    emptyNote(el.gallery, list.length ? null : studio.gallery ? 'nothing rendered yet \u2014 your images land here' : 'loading\u2026');
    reconcile(el.gallery, list, (job) => job.job_id, tiles, (job, tile) => tile || renderTile(job), (tile) => {
      if (tile.sha) releaseArtifact(tile.sha);
    });
    el.count.textContent = String(list.length);
  }

  el.gallery.addEventListener('click', (ev) => {
    const b = closest(ev, 'button[data-action]');
    const fig = b ? b.closest('figure[data-job-id]') : null;
    const tile = fig ? tiles.get(fig.dataset.jobId) : null;
    if (!tile) return;
    if (b.dataset.action === 'reuse') actions.reuse(tile.job);
    else if (b.dataset.action === 'post-artifact') actions.post(b.dataset.sha256);
  });

  return { render: render };
}
