// Video: personas (a character's look and voice), new videos from a script (stills or
// AnimateDiff clips, announced through the Stream Bot if asked), the queue with its priorities,
// schedules with their next firings, each project's pipeline live (scenes, pictures, narration,
// assembly, thumbnail), and the finished video played here. `#/video?project=<id>` opens one project.

import { api } from '../api.js';
import { acquireArtifact, releaseArtifact } from '../artifacts.js';
import { button, closest, h, showError } from '../dom.js';
import { fmtBytes } from '../state/format.js';
import { MAX_MUSIC_BYTES, actions, audioContentType, buildSchedule, normalizePersonas, normalizeProject, normalizeProjects, normalizeSchedules, queueOrder, steps, touchesVideo } from '../state/video.js';

const DESTINATIONS = ['twitch', 'youtube', 'kick'];

/** An instant as the schedule's own zone reads it (the browser's, if it does not know it). */
function inZone(iso, zone) {
  const at = new Date(iso);
  try {
    return at.toLocaleString(undefined, { timeZone: zone, dateStyle: 'medium', timeStyle: 'short' });
  } catch (_e) {
    return at.toLocaleString();
  }
}
const announce = (prefix) => DESTINATIONS.map((d) => `<label class="inline"><input type="checkbox" name="${prefix}-${d}" value="${d}"> ${d}</label>`).join(' ');

const html = `
<section class="panel panel-video-new" aria-labelledby="video-new-title">
  <div class="panel-head"><h2 id="video-new-title">New video</h2></div>
  <form id="video-form" class="video-form">
    <label>title <input name="title" maxlength="200" placeholder="Nova's night" required></label>
    <label>persona <select name="persona" id="video-persona"></select></label>
    <label>format <select name="format"><option value="9:16">9:16 (Shorts)</option><option value="16:9">16:9</option><option value="1:1">1:1</option></select></label>
    <label>scenes <select name="visuals"><option value="stills">stills, slowly moving</option><option value="clips">clips (AnimateDiff)</option></select></label>
    <label>priority <input name="priority" type="number" step="1" value="0" class="video-priority-input"></label>
    <span class="small">announce on ${announce('post')}</span>
    <label>music (optional) <input name="music" type="file" accept="audio/*,.mp3,.wav,.ogg,.opus,.flac,.m4a"></label>
    <label class="video-script">script (a paragraph a scene) <textarea name="script" rows="5" maxlength="32768" required placeholder="Nova wakes in a neon city.&#10;&#10;She walks past glowing signs."></textarea></label>
    <button class="btn btn-small btn-primary" type="submit" data-needs="operator">Make the video</button>
    <span id="video-form-message" class="small"></span>
  </form>
</section>
<section class="panel panel-video-personas" aria-labelledby="video-personas-title">
  <div class="panel-head"><h2 id="video-personas-title">Personas</h2></div>
  <ul id="video-personas" class="video-personas"></ul>
  <form id="persona-form" class="video-form persona-form">
    <label>name <input name="name" pattern="[a-z0-9][a-z0-9_-]{0,63}" placeholder="nova" required></label>
    <label>style prompt <input name="style" placeholder="neon portrait of Nova, pink hair"></label>
    <label>negative <input name="negative" placeholder="blurry"></label>
    <label>seed <input name="seed" type="number" min="0" value="1"></label>
    <label>voice <input name="voice" value="espeak-ng:en-us"></label>
    <button class="btn btn-small" type="submit" data-needs="operator">Save persona</button>
    <span id="persona-form-message" class="small"></span>
  </form>
</section>
<section class="panel panel-video-queue" aria-labelledby="video-queue-title">
  <div class="panel-head"><h2 id="video-queue-title">Queue</h2><span id="video-queue-count" class="small muted"></span></div>
  <ol id="video-queue" class="video-queue"></ol>
</section>
<section class="panel panel-video-schedules" aria-labelledby="video-schedules-title">
  <div class="panel-head"><h2 id="video-schedules-title">Schedules</h2></div>
  <ul id="video-schedules" class="video-schedules"></ul>
  <form id="schedule-form" class="video-form schedule-form">
    <label>name <input name="name" pattern="[a-z0-9][a-z0-9_-]{0,63}" placeholder="nightly" required></label>
    <label>cron <input name="cron" placeholder="30 18 * * *" required></label>
    <label>time zone <input name="zone" placeholder="Europe/Berlin"></label>
    <label>title <input name="title" placeholder="Night facts #{n}" required></label>
    <label>persona <select name="persona" id="schedule-persona"></select></label>
    <label>format <select name="format"><option value="9:16">9:16</option><option value="16:9">16:9</option><option value="1:1">1:1</option></select></label>
    <label>scenes <select name="visuals"><option value="stills">stills</option><option value="clips">clips</option></select></label>
    <label>from <select name="source"><option value="scripts">scripts</option><option value="topics">topics (the local LLM writes)</option></select></label>
    <label>missed runs <select name="missed"><option value="skip">skip</option><option value="catch_up_once">catch up once</option></select></label>
    <span class="small">announce on ${announce('spost')}</span>
    <label class="video-script">scripts (apart by a blank line) or topics (one a line) <textarea name="lines" rows="3" required></textarea></label>
    <button class="btn btn-small" type="submit" data-needs="operator">Save schedule</button>
    <span id="schedule-form-message" class="small"></span>
  </form>
</section>
<section class="panel panel-video-projects" aria-label="Video projects">
  <div class="panel-head">
    <span id="video-count" class="small muted">loading\u2026</span>
    <button id="video-refresh" class="btn btn-small" type="button">Refresh</button>
  </div>
  <div id="video-error" class="studio-error" role="alert" hidden></div>
  <ol id="video-projects" class="video-projects"></ol>
</section>
<section class="panel panel-video-project" aria-label="The project" id="video-project" hidden></section>`;

function mount(ctx) {
  const root = ctx.root;
  const form = root.querySelector('#video-form');
  const formMessage = root.querySelector('#video-form-message');
  const personaSelect = root.querySelector('#video-persona');
  const personaList = root.querySelector('#video-personas');
  const personaForm = root.querySelector('#persona-form');
  const personaMessage = root.querySelector('#persona-form-message');
  const list = root.querySelector('#video-projects');
  const count = root.querySelector('#video-count');
  const refresh = root.querySelector('#video-refresh');
  const error = root.querySelector('#video-error');
  const detail = root.querySelector('#video-project');
  const queue = root.querySelector('#video-queue');
  const queueCount = root.querySelector('#video-queue-count');
  const scheduleList = root.querySelector('#video-schedules');
  const scheduleForm = root.querySelector('#schedule-form');
  const scheduleMessage = root.querySelector('#schedule-form-message');
  const schedulePersona = root.querySelector('#schedule-persona');
  let shown = false;
  let chosen = null;
  let projects = [];
  let project = null;
  // The artifacts the detail shows (blob URLs), released when it changes.
  let held = [];
  const uploads = new WeakMap(); // File -> sha256 (a chosen music file is uploaded once)

  function release() {
    held.forEach(releaseArtifact);
    held = [];
  }

  function media(sha, make) {
    held.push(sha);
    const holder = h('div', 'video-media');
    acquireArtifact(sha).then((url) => {
      if (url) holder.appendChild(make(url));
    });
    return holder;
  }

  function renderQueue() {
    queue.textContent = '';
    const waiting = queueOrder(projects);
    queueCount.textContent = waiting.length ? waiting.length + ' to make' : '';
    for (const p of waiting) {
      const li = h('li', 'video-queue-row');
      li.dataset.project = p.id;
      li.appendChild(h('span', 'badge video-status status-' + p.status, p.status));
      li.appendChild(h('span', 'video-title', ' ' + p.title + ' '));
      li.appendChild(h('span', 'small muted video-priority', 'priority ' + p.priority));
      if (p.status === 'queued') {
        for (const [label, by] of [['\u2191', 1], ['\u2193', -1]]) {
          const b = button(label, 'btn-small', by > 0 ? 'Raise its priority' : 'Lower its priority');
          b.dataset.priority = String(p.priority + by);
          b.dataset.needs = 'operator';
          li.appendChild(b);
        }
      }
      queue.appendChild(li);
    }
    if (!waiting.length) queue.appendChild(h('li', 'small muted', 'nothing waiting'));
  }

  function renderList() {
    renderQueue();
    list.textContent = '';
    count.textContent = projects.length + (projects.length === 1 ? ' project' : ' projects');
    for (const p of projects) {
      const li = h('li', 'video-row' + (p.id === chosen ? ' chosen' : ''));
      li.dataset.project = p.id;
      li.dataset.status = p.status;
      li.appendChild(h('span', 'badge video-status status-' + p.status, p.status));
      li.appendChild(h('span', 'video-title', ' ' + p.title));
      li.appendChild(h('span', 'small muted', ' \u00b7 ' + p.format + (p.persona ? ' \u00b7 ' + p.persona : '')));
      list.appendChild(li);
    }
  }

  /** An `<audio>` or `<video>` with controls, loading `preload` of `url` up front. */
  function player(tag, className, preload, url) {
    const el = document.createElement(tag);
    el.className = className;
    el.controls = true;
    el.preload = preload;
    el.src = url;
    return el;
  }

  function renderDetail() {
    release();
    detail.textContent = '';
    detail.hidden = !project;
    if (!project) return;
    const head = h('div', 'panel-head');
    head.appendChild(h('h2', null, project.title));
    head.appendChild(h('span', 'badge video-status status-' + project.status, project.status));
    detail.appendChild(head);
    const pipeline = h('ol', 'video-steps');
    for (const step of steps(project)) {
      const li = h('li', 'video-step' + (step.done >= step.of ? ' done' : ''));
      li.dataset.step = step.name;
      li.textContent = step.name + (step.of > 1 ? ' ' + step.done + '/' + step.of : step.done ? ' \u2713' : '');
      pipeline.appendChild(li);
    }
    detail.appendChild(pipeline);
    if (project.failure) detail.appendChild(h('div', 'video-error', project.failure.step + ': ' + project.failure.reason));
    if (project.post) {
      const said = project.posted ? 'announced on ' + project.post.destinations.join(', ') + ' (post ' + project.posted.slice(0, 8) + ')' : 'to be announced on ' + project.post.destinations.join(', ');
      detail.appendChild(h('div', 'small muted video-post', said));
    }
    if (project.music) {
      const row = h('div', 'small muted video-music', 'music ' + project.music.slice(0, 12) + ' ');
      row.appendChild(media(project.music, (url) => player('audio', 'video-music-player', 'none', url)));
      detail.appendChild(row);
    }
    if (project.video) detail.appendChild(media(project.video, (url) => player('video', 'video-player', 'metadata', url)));
    if (project.thumbnail) {
      detail.appendChild(media(project.thumbnail, (url) => {
        const img = h('img', 'video-thumbnail');
        img.alt = 'thumbnail of ' + project.title;
        img.src = url;
        return img;
      }));
    }
    const scenes = h('ol', 'video-scenes');
    for (const scene of project.scenes) {
      const li = h('li', 'video-scene');
      li.appendChild(h('div', null, scene.text));
      li.appendChild(h('div', 'small muted mono', scene.prompt + ' \u00b7 seed ' + scene.seed + (scene.durationMs ? ' \u00b7 ' + (scene.durationMs / 1000).toFixed(1) + ' s' : '')));
      if (scene.picture) {
        li.appendChild(media(scene.picture, (url) => {
          if (project.visuals === 'clips') {
            const clip = document.createElement('video');
            clip.className = 'video-scene-picture';
            clip.muted = true;
            clip.loop = true;
            clip.autoplay = true;
            clip.setAttribute('aria-label', 'scene ' + scene.n + ' clip');
            clip.src = url;
            return clip;
          }
          const img = h('img', 'video-scene-picture');
          img.alt = 'scene ' + scene.n;
          img.src = url;
          return img;
        }));
      }
      scenes.appendChild(li);
    }
    detail.appendChild(scenes);
    const buttons = h('div', 'video-actions');
    for (const action of actions(project)) {
      const b = button('Cancel', 'btn-small btn-danger', 'Cancel this video and its renders');
      b.dataset.action = action;
      b.dataset.needs = 'operator';
      buttons.appendChild(b);
    }
    detail.appendChild(buttons);
  }

  async function loadProject() {
    if (!chosen) {
      project = null;
      return renderDetail();
    }
    const res = await api('/api/video/projects/' + encodeURIComponent(chosen));
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'project ' + chosen + ' unavailable: ' + res.message);
      return;
    }
    project = normalizeProject(res.data);
    renderDetail();
  }

  async function loadPersonas() {
    const res = await api('/api/video/personas');
    if (!res.ok) return;
    const personas = normalizePersonas(res.data);
    const current = personaSelect.value;
    const currentSchedule = schedulePersona.value;
    for (const select of [personaSelect, schedulePersona]) {
      select.textContent = '';
      select.appendChild(h('option', null, 'none'));
      select.firstChild.value = '';
      for (const p of personas) {
        const option = h('option', null, p.name);
        option.value = p.name;
        select.appendChild(option);
      }
    }
    schedulePersona.value = currentSchedule;
    personaList.textContent = '';
    for (const p of personas) {
      const li = h('li', 'video-persona');
      li.dataset.persona = p.name;
      li.appendChild(h('strong', null, p.name));
      li.appendChild(h('span', 'small muted', ' ' + (p.style || 'no style') + ' \u00b7 ' + p.seed + ' \u00b7 ' + p.voice));
      personaList.appendChild(li);
    }
    if (!personas.length) personaList.appendChild(h('li', 'small muted', 'none yet'));
    if (current) personaSelect.value = current;
  }

  async function loadSchedules() {
    const res = await api('/api/video/schedules');
    if (!res.ok) return;
    scheduleList.textContent = '';
    const schedules = normalizeSchedules(res.data);
    for (const s of schedules) {
      const li = h('li', 'video-schedule');
      li.dataset.schedule = s.name;
      li.appendChild(h('strong', null, s.name));
      li.appendChild(h('span', 'small', ' ' + s.cron + ' (' + s.zone + ') \u2192 ' + s.title + ' \u00b7 ' + s.source + ' \u00b7 ' + s.format + ' \u00b7 ' + s.visuals + (s.persona ? ' \u00b7 ' + s.persona : '') + (s.post.length ? ' \u00b7 announced on ' + s.post.join(', ') : '')));
      const next = h('div', 'small muted video-next', s.enabled ? 'next: ' + (s.next.length ? s.next.map((t) => inZone(t, s.zone)).join(' \u00b7 ') + ' (' + s.zone + ')' : 'none') : 'disabled');
      li.appendChild(next);
      li.appendChild(h('div', 'small muted', 'fired ' + s.fired + (s.fired === 1 ? ' time' : ' times')));
      const remove = button('Remove', 'btn-small btn-danger', 'Remove this schedule (its videos stay)');
      remove.dataset.remove = s.name;
      remove.dataset.needs = 'operator';
      li.appendChild(remove);
      scheduleList.appendChild(li);
    }
    if (!schedules.length) scheduleList.appendChild(h('li', 'small muted', 'none yet'));
  }

  async function load() {
    refresh.disabled = true;
    const res = await api('/api/video/projects');
    refresh.disabled = false;
    if (!res.ok) {
      if (res.status !== 401) showError(error, 'projects unavailable: ' + res.message);
      return;
    }
    showError(error, '');
    projects = normalizeProjects(res.data);
    renderList();
    loadProject();
  }

  /** Uploads a music file once (the same file again is not sent twice): its sha256. */
  async function uploadMusic(file) {
    const known = uploads.get(file);
    if (known) return { sha: known };
    const type = audioContentType(file.type, file.name);
    if (!type) return { error: 'music: ' + (file.name || 'the file') + ' is not an audio file' };
    if (file.size > MAX_MUSIC_BYTES) return { error: 'music: ' + fmtBytes(file.size) + ' is larger than ' + fmtBytes(MAX_MUSIC_BYTES) };
    formMessage.textContent = 'uploading the music\u2026';
    const res = await api('/api/video/music', { method: 'POST', body: file, contentType: type });
    if (!res.ok) return { error: 'music refused: ' + res.message };
    const sha = res.data && typeof res.data.sha256 === 'string' ? res.data.sha256 : null;
    if (!sha) return { error: 'music: the server answered without a sha256' };
    uploads.set(file, sha);
    return { sha: sha };
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { title: form.title.value.trim(), script: form.script.value, format: form.format.value, visuals: form.visuals.value, priority: Number(form.priority.value) || 0 };
    if (personaSelect.value) body.persona = personaSelect.value;
    const destinations = DESTINATIONS.filter((d) => form['post-' + d].checked);
    if (destinations.length) body.post = { text: 'New video: {title}', destinations: destinations };
    formMessage.className = 'small';
    const file = form.music.files && form.music.files[0];
    if (file) {
      const music = await uploadMusic(file);
      if (music.error) {
        formMessage.textContent = music.error;
        formMessage.className = 'small bad';
        return;
      }
      body.music = music.sha;
    }
    formMessage.textContent = 'asking\u2026';
    const res = await api('/api/video/projects', { method: 'POST', json: body });
    formMessage.textContent = res.ok ? 'project ' + res.data.project_id.slice(0, 8) + ' queued' : 'refused: ' + res.message;
    formMessage.className = 'small ' + (res.ok ? 'ok' : 'bad');
    if (res.ok) {
      form.script.value = '';
      form.music.value = '';
      chosen = res.data.project_id;
      ctx.setParams({ project: chosen });
    }
    load();
  });
  personaForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = personaForm.name.value.trim();
    const body = {
      style_prompt: personaForm.style.value.trim(),
      negative_prompt: personaForm.negative.value.trim(),
      seed: { policy: 'fixed', seed: Number(personaForm.seed.value) || 0 },
      voice: personaForm.voice.value.trim(),
    };
    const res = await api('/api/video/personas/' + encodeURIComponent(name), { method: 'PUT', json: body });
    personaMessage.textContent = res.ok ? 'saved ' + name : 'refused: ' + res.message;
    personaMessage.className = 'small ' + (res.ok ? 'ok' : 'bad');
    loadPersonas();
  });
  scheduleForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = scheduleForm;
    const built = buildSchedule({
      name: f.name.value, cron: f.cron.value, zone: f.zone.value, title: f.title.value, persona: f.persona.value,
      format: f.format.value, visuals: f.visuals.value, source: f.source.value, missed: f.missed.value, lines: f.lines.value,
      destinations: DESTINATIONS.filter((d) => f['spost-' + d].checked),
    });
    if (built.error) {
      scheduleMessage.textContent = built.error;
      scheduleMessage.className = 'small bad';
      return;
    }
    const res = await api('/api/video/schedules/' + encodeURIComponent(built.name), { method: 'PUT', json: built.body });
    scheduleMessage.textContent = res.ok ? 'saved ' + built.name : 'refused: ' + res.message;
    scheduleMessage.className = 'small ' + (res.ok ? 'ok' : 'bad');
    loadSchedules();
  });
  scheduleList.addEventListener('click', async (ev) => {
    const b = closest(ev, 'button[data-remove]');
    if (!b || b.disabled) return;
    b.disabled = true;
    const res = await api('/api/video/schedules/' + encodeURIComponent(b.dataset.remove), { method: 'DELETE' });
    if (!res.ok) showError(error, 'remove refused: ' + res.message);
    loadSchedules();
  });
  queue.addEventListener('click', async (ev) => {
    const b = closest(ev, 'button[data-priority]');
    const li = closest(ev, 'li[data-project]');
    if (!b || !li || b.disabled) return;
    b.disabled = true;
    const res = await api('/api/video/projects/' + encodeURIComponent(li.dataset.project) + '/priority', { method: 'POST', json: { priority: Number(b.dataset.priority) } });
    if (!res.ok) showError(error, 'priority refused: ' + res.message);
    load();
  });
  list.addEventListener('click', (ev) => {
    const li = closest(ev, 'li[data-project]');
    if (!li) return;
    chosen = li.dataset.project;
    ctx.setParams({ project: chosen });
    renderList();
    loadProject();
  });
  detail.addEventListener('click', async (ev) => {
    const b = closest(ev, 'button[data-action]');
    if (!b || b.disabled || !project) return;
    b.disabled = true;
    const res = await api('/api/video/projects/' + encodeURIComponent(project.id) + '/cancel', { method: 'POST', json: {} });
    if (!res.ok) showError(error, 'cancel refused: ' + res.message);
    load();
  });
  refresh.addEventListener('click', load);
  ctx.onChanges((changes) => {
    if (!shown) return;
    if (changes.kind === 'snapshot' || changes.events.some((item) => touchesVideo(item.env))) {
      load();
      loadPersonas();
      loadSchedules();
    }
  });

  return {
    show(params) {
      shown = true;
      if (params && params.project) chosen = params.project;
      load();
      loadPersonas();
      loadSchedules();
    },
    hide() {
      shown = false;
      release();
    },
  };
}

export default {
  id: 'video',
  title: 'Video',
  subtitle: 'from a script to a narrated video, on your own GPUs',
  icon: 'M2 4h9v8H2zM11 7l3-2v6l-3-2',
  css: ['css/video.css'],
  html: html,
  mount: mount,
};
