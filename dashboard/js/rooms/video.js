// Video: personas (a character's look and voice), new videos from a script, each project's
// pipeline live (scenes, pictures, narration, assembly, thumbnail), and the finished video
// played here. `#/video?project=<id>` opens one project.

import { api } from '../api.js';
import { acquireArtifact, releaseArtifact } from '../artifacts.js';
import { button, closest, h, showError } from '../dom.js';
import { actions, normalizePersonas, normalizeProject, normalizeProjects, steps, touchesVideo } from '../state/video.js';

const html = `
<section class="panel panel-video-new" aria-labelledby="video-new-title">
  <div class="panel-head"><h2 id="video-new-title">New video</h2></div>
  <form id="video-form" class="video-form">
    <label>title <input name="title" maxlength="200" placeholder="Nova's night" required></label>
    <label>persona <select name="persona" id="video-persona"></select></label>
    <label>format <select name="format"><option value="9:16">9:16 (Shorts)</option><option value="16:9">16:9</option><option value="1:1">1:1</option></select></label>
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
  let shown = false;
  let chosen = null;
  let projects = [];
  let project = null;
  // The artifacts the detail shows (blob URLs), released when it changes.
  let held = [];

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

  function renderList() {
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
    if (project.video) {
      detail.appendChild(media(project.video, (url) => {
        const player = document.createElement('video');
        player.className = 'video-player';
        player.controls = true;
        player.preload = 'metadata';
        player.src = url;
        return player;
      }));
    }
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
    personaSelect.textContent = '';
    personaSelect.appendChild(h('option', null, 'none'));
    personaSelect.firstChild.value = '';
    personaList.textContent = '';
    for (const p of personas) {
      const option = h('option', null, p.name);
      option.value = p.name;
      personaSelect.appendChild(option);
      const li = h('li', 'video-persona');
      li.dataset.persona = p.name;
      li.appendChild(h('strong', null, p.name));
      li.appendChild(h('span', 'small muted', ' ' + (p.style || 'no style') + ' \u00b7 ' + p.seed + ' \u00b7 ' + p.voice));
      personaList.appendChild(li);
    }
    if (!personas.length) personaList.appendChild(h('li', 'small muted', 'none yet'));
    if (current) personaSelect.value = current;
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

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { title: form.title.value.trim(), script: form.script.value, format: form.format.value };
    if (personaSelect.value) body.persona = personaSelect.value;
    formMessage.textContent = 'asking\u2026';
    formMessage.className = 'small';
    const res = await api('/api/video/projects', { method: 'POST', json: body });
    formMessage.textContent = res.ok ? 'project ' + res.data.project_id.slice(0, 8) + ' queued' : 'refused: ' + res.message;
    formMessage.className = 'small ' + (res.ok ? 'ok' : 'bad');
    if (res.ok) {
      form.script.value = '';
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
    }
  });

  return {
    show(params) {
      shown = true;
      if (params && params.project) chosen = params.project;
      load();
      loadPersonas();
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
