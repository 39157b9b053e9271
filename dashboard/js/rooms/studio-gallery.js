// The Studio's gallery: finished images (fetched with the token) with their provenance, a
// "reuse" that loads the parameters into the form, a "share" that makes (or revokes) a public
// link to one image, a "post" that announces it on the streams, and a "delete" (asked twice)
// that takes the job out of the gallery, its file left for the next storage sweep.

import { api } from '../api.js';
import { acquireArtifact, releaseArtifact } from '../artifacts.js';
import { byIds, closest, emptyNote, h, hc, reconcile, showError } from '../dom.js';
import { refreshRender, studio } from '../render-feed.js';
import { fmtBytes, fmtClock, isObj, num, shortId, str, tailId, text, truncate } from '../state/format.js';
import { isSimulated, shareOf } from '../state/studio.js';
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
    const remove = h('button', 'btn btn-small btn-danger tile-delete', 'delete');
    remove.type = 'button';
    remove.title = 'take this job out of the gallery (its files go at the next storage sweep, unless something else uses them)';
    remove.dataset.action = 'delete';
    remove.dataset.needs = 'operator';
    const removeError = h('div', 'studio-error tile-delete-error');
    removeError.setAttribute('role', 'alert');
    removeError.hidden = true;
    const link = art && str(art.sha256) ? shareControls() : null;
    fig.appendChild(
      hc('figcaption', 'tile-caption', [
        head,
        p,
        provenance(job, art),
        hc('div', 'tile-actions', [reuse, download, link ? link.button : null, share, remove, more]),
        link ? link.row : null,
        link ? link.error : null,
        removeError,
      ]),
    );

    const sha = art ? str(art.sha256) : null;
    if (sha) {
      acquireArtifact(sha).then((url) => {
        if (tiles.get(job.job_id) === undefined) return;
        const placeholder = frame.querySelector('.tile-placeholder');
        if (!url) {
          if (placeholder) placeholder.textContent = 'image unavailable';
          return;
        }
        // A clip plays in place (muted, looping, as a moving thumbnail); a picture is an img.
        const clip = str(art.content_type) === 'video/mp4';
        const img = document.createElement(clip ? 'video' : 'img');
        if (clip) {
          img.muted = true;
          img.loop = true;
          img.autoplay = true;
          img.playsInline = true;
          img.setAttribute('aria-label', prompt ? truncate(prompt, 120) : 'clip ' + tailId(job.job_id));
        } else {
          img.alt = prompt ? truncate(prompt, 120) : 'render ' + tailId(job.job_id);
          img.decoding = 'async';
        }
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
    const tile = { el: fig, sha: sha, job: job, link: link, pending: undefined };
    showShare(tile);
    return tile;
  }

  // The share button, and the row that shows the public link with copy and unshare.
  function shareControls() {
    const button = h('button', 'btn btn-small', '\u{1F517} share');
    button.type = 'button';
    button.title = 'make a public link to this image: anyone with the link can see it, nothing else';
    button.dataset.action = 'share';
    button.dataset.needs = 'operator';
    const anchor = h('a', 'share-link mono small');
    anchor.target = '_blank';
    anchor.rel = 'noopener noreferrer';
    const copy = h('button', 'btn btn-small', 'copy');
    copy.type = 'button';
    copy.dataset.action = 'copy-link';
    const unshare = h('button', 'btn btn-small', 'unshare');
    unshare.type = 'button';
    unshare.title = 'the link stops working (sharing again makes a new one)';
    unshare.dataset.action = 'unshare';
    unshare.dataset.needs = 'operator';
    const row = hc('div', 'tile-share', [h('span', 'small muted', 'public link'), anchor, copy, unshare]);
    row.hidden = true;
    const error = h('div', 'studio-error tile-share-error');
    error.setAttribute('role', 'alert');
    error.hidden = true;
    return { button: button, row: row, anchor: anchor, copy: copy, error: error };
  }

  function showShare(tile) {
    if (!tile.link) return;
    const shown = shareOf(tile.job, tile.sha, tile.pending);
    if (shown.settled) tile.pending = undefined;
    tile.link.row.hidden = !shown.link;
    tile.link.button.hidden = !!shown.link;
    tile.link.row.dataset.token = shown.link ? shown.link.token : '';
    tile.link.anchor.href = shown.link ? shown.link.url : '#';
    tile.link.anchor.textContent = shown.link ? shown.link.url : '';
  }

  async function shareAction(tile, action) {
    const link = tile.link;
    showError(link.error, '');
    if (action === 'copy-link') {
      const url = link.anchor.href;
      let copied = false;
      try {
        if (navigator.clipboard && typeof navigator.clipboard.writeText === 'function') {
          await navigator.clipboard.writeText(url);
          copied = true;
        }
      } catch (_e) {
        /* not allowed here: the link is selectable */
      }
      link.copy.textContent = copied ? 'copied' : 'select it';
      setTimeout(() => (link.copy.textContent = 'copy'), 1500);
      return;
    }
    const base = '/api/render/jobs/' + encodeURIComponent(tile.job.job_id) + '/shares';
    const button = action === 'share' ? link.button : link.row.querySelector('[data-action=unshare]');
    button.disabled = true;
    try {
      if (action === 'share') {
        const res = await api(base, { method: 'POST', json: { sha256: tile.sha } });
        if (!res.ok) return showError(link.error, 'not shared: ' + res.message);
        const token = isObj(res.data) ? str(res.data.token) : null;
        const url = isObj(res.data) ? str(res.data.url) : null;
        if (!token || !url) return showError(link.error, 'the server answered without a link');
        tile.pending = { token: token, url: url };
      } else {
        const res = await api(base + '/' + encodeURIComponent(tile.sha), { method: 'DELETE' });
        if (!res.ok && res.status !== 404) return showError(link.error, 'still shared: ' + res.message);
        tile.pending = null;
      }
      showShare(tile);
    } finally {
      button.disabled = false;
    }
  }

  // Asked twice: the first click turns the button into "confirm delete".
  async function deleteAction(tile, button) {
    const error = tile.el.querySelector('.tile-delete-error');
    if (!tile.confirmDelete) {
      tile.confirmDelete = true;
      button.textContent = 'confirm delete';
      return;
    }
    button.disabled = true;
    const res = await api('/api/render/jobs/' + encodeURIComponent(tile.job.job_id), { method: 'DELETE' });
    if (!res.ok) {
      tile.confirmDelete = false;
      button.disabled = false;
      button.textContent = 'delete';
      showError(error, 'not deleted: ' + res.message);
      return;
    }
    tile.el.classList.add('tile-deleted');
    refreshRender({ gallery: true });
  }

  function render() {
    const list = Array.isArray(studio.gallery) ? studio.gallery.filter((j) => isObj(j) && str(j.job_id)) : [];
    emptyNote(el.gallery, list.length ? null : studio.gallery ? 'nothing rendered yet \u2014 your images land here' : 'loading\u2026');
    const update = (job, tile) => {
      if (!tile) return renderTile(job);
      tile.job = job;
      showShare(tile);
      return tile;
    };
    reconcile(el.gallery, list, (job) => job.job_id, tiles, update, (tile) => {
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
    else if (b.dataset.action === 'delete') deleteAction(tile, b);
    else if (tile.link && ['share', 'copy-link', 'unshare'].indexOf(b.dataset.action) !== -1) shareAction(tile, b.dataset.action);
  });

  return { render: render };
}
