// The Stream Bot: an announcement posted to Twitch, YouTube and Kick through /api/posts, with a
// gallery image's share link when one is attached (the gallery's "post" opens
// `#/streambot?artifact=<sha256>`), and each destination's outcome as its events arrive.

import { acquireArtifact, releaseArtifact } from '../artifacts.js';
import { api } from '../api.js';
import { h, showError } from '../dom.js';
import { isObj, plain, str } from '../state/format.js';
import { buildPost, destinationOutcome, isSha256, postSummary } from '../state/posts.js';

const html = `
<div class="split">
  <section class="panel panel-posts" aria-labelledby="posts-title">
    <div class="panel-head">
      <h2 id="posts-title">New announcement</h2>
      <span class="small muted">\u2197 post on a gallery image attaches it</span>
    </div>
    <form id="post-form" class="post-form" autocomplete="off" novalidate data-needs="operator">
      <label class="field field-wide" for="post-text"><span class="field-label">Announcement</span>
        <textarea id="post-text" rows="3" maxlength="500" spellcheck="true" placeholder="We're live: tonight's renders"></textarea></label>
      <div id="post-artifact" class="post-artifact" hidden>
        <span class="post-thumb" aria-hidden="true"></span>
        <span class="small muted">with the image</span> <code id="post-artifact-sha"></code>
        <button id="post-artifact-clear" class="btn btn-link" type="button">remove</button>
      </div>
      <fieldset class="post-destinations">
        <legend class="field-label">Post to</legend>
        <label><input type="checkbox" name="destination" value="twitch" checked> Twitch</label>
        <label><input type="checkbox" name="destination" value="youtube" checked> YouTube</label>
        <label><input type="checkbox" name="destination" value="kick" checked> Kick</label>
      </fieldset>
      <div class="form-actions">
        <button id="post-submit" class="btn btn-primary" type="submit" data-needs="operator">Post</button>
        <span id="post-notice" class="studio-notice" role="status" aria-live="polite"></span>
      </div>
      <div id="post-error" class="studio-error" role="alert" hidden></div>
    </form>
  </section>
  <section class="panel panel-post-list" aria-labelledby="post-list-title">
    <div class="panel-head"><h2 id="post-list-title">Posted this session</h2></div>
    <ol id="post-list" class="post-list" aria-live="polite"></ol>
  </section>
</div>`;

function newKey() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  return String(Date.now()) + '-' + Math.random().toString(16).slice(2);
}

function mount(ctx) {
  const q = (id) => ctx.root.querySelector('#' + id);
  const ui = {
    form: q('post-form'),
    text: q('post-text'),
    artifact: q('post-artifact'),
    thumb: ctx.root.querySelector('.post-thumb'),
    artifactSha: q('post-artifact-sha'),
    artifactClear: q('post-artifact-clear'),
    submit: q('post-submit'),
    notice: q('post-notice'),
    error: q('post-error'),
    list: q('post-list'),
  };
  const posts = new Map(); // post id -> the post as GET /api/posts/{id} answers (this session's)
  let artifact = null; // sha256 of the image to share with the next post
  let posting = false;

  function setArtifact(sha) {
    if (artifact === sha) return;
    if (artifact) releaseArtifact(artifact);
    artifact = sha;
    ui.artifact.hidden = !sha;
    ui.artifactSha.textContent = sha ? sha.slice(0, 12) + '\u2026' : '';
    ui.artifactSha.title = sha || '';
    ui.thumb.textContent = '';
    if (!sha) return;
    acquireArtifact(sha).then((url) => {
      if (!url || artifact !== sha) return;
      const img = document.createElement('img');
      img.src = url;
      img.alt = '';
      ui.thumb.appendChild(img);
    });
  }

  function renderPosts() {
    ui.list.textContent = '';
    if (!posts.size) ui.list.appendChild(h('li', 'empty-note', 'nothing posted yet \u2014 each destination\u2019s outcome shows here'));
    for (const post of Array.from(posts.values()).reverse()) {
      const li = h('li', 'post-entry');
      li.dataset.postId = plain(post.post_id);
      li.appendChild(h('div', 'post-text', plain(post.text)));
      const outcomes = h('div', 'post-outcomes');
      const destinations = isObj(post.destinations) ? post.destinations : {};
      for (const name of Object.keys(destinations).sort()) {
        const o = destinationOutcome(name, destinations[name]);
        const badge = h('span', 'badge outcome-' + o.cls, o.label);
        badge.dataset.destination = name;
        badge.dataset.status = (isObj(destinations[name]) && str(destinations[name].status)) || 'pending';
        if (o.title) badge.title = o.title;
        outcomes.appendChild(badge);
      }
      li.appendChild(outcomes);
      ui.list.appendChild(li);
    }
    const summary = postSummary(posts.get(ui.notice.dataset.postId));
    if (summary) ui.notice.textContent = summary;
  }

  async function refreshPost(id) {
    const res = await api('/api/posts/' + encodeURIComponent(id));
    if (!res.ok || !isObj(res.data)) return;
    posts.set(id, res.data);
    renderPosts();
  }

  async function submit(ev) {
    ev.preventDefault();
    if (posting) return;
    showError(ui.error, '');
    ui.notice.textContent = '';
    const destinations = Array.from(ui.form.querySelectorAll('input[name=destination]:checked'), (i) => i.value);
    const built = buildPost(ui.text.value, destinations, artifact);
    if (built.error) return showError(ui.error, built.error);
    posting = true;
    ui.submit.disabled = true;
    try {
      // One key per post: a retried request (a double click, a flaky network) finds it.
      const key = ui.form.dataset.key || newKey();
      ui.form.dataset.key = key;
      const res = await api('/api/posts', { method: 'POST', json: built.body, headers: { 'Idempotency-Key': key } });
      if (!res.ok) return showError(ui.error, res.message);
      delete ui.form.dataset.key;
      const id = isObj(res.data) ? str(res.data.post_id) : null;
      if (!id) return showError(ui.error, 'the server answered without a post id');
      posts.set(id, { post_id: id, text: built.body.text, artifact: artifact, destinations: {} });
      ui.notice.textContent = 'posting\u2026';
      ui.notice.dataset.postId = id;
      ui.text.value = '';
      setArtifact(null);
      renderPosts();
      refreshPost(id);
    } finally {
      posting = false;
      ui.submit.disabled = false;
    }
  }

  ui.form.addEventListener('submit', submit);
  ui.artifactClear.addEventListener('click', () => setArtifact(null));
  ctx.onChanges((changes) => {
    for (const item of changes.events) {
      const env = item.env;
      if (isObj(env) && env.aggregate_type === 'post' && posts.has(env.aggregate_id)) refreshPost(env.aggregate_id);
    }
  });
  renderPosts();

  return {
    show(params) {
      if (params && isSha256(params.artifact)) {
        setArtifact(params.artifact);
        ctx.setParams({}); // taken: a reload does not attach it again
        ui.text.focus();
      }
    },
  };
}

export default {
  id: 'streambot',
  title: 'Stream Bot',
  subtitle: 'announce on Twitch, YouTube and Kick, with a gallery image\u2019s link',
  icon: 'M2 6v4h2l5 3V3L4 6zM11.5 5.5a3.5 3.5 0 0 1 0 5',
  css: ['css/streambot.css'],
  html: html,
  mount: mount,
};
