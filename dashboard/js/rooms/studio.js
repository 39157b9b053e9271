// The Creative Studio: the render form (all six modes, input images uploaded first), the live
// queue and recent failures (studio-queue.js), and the gallery (studio-gallery.js).
// `#/studio?job=<id>` points at one job.

import { api } from '../api.js';
import { byIds, showError } from '../dom.js';
import { refreshRender, studio, subscribeRender } from '../render-feed.js';
import { fmtBytes, isObj, str, tailId } from '../state/format.js';
import { buildRenderRequest, imageContentType, isSimulated, jobFormValues, MAX_INPUT_BYTES, modeFields, modeImages, queueJobs, randomSeed } from '../state/studio.js';
import { mountGallery } from './studio-gallery.js';
import { mountQueue } from './studio-queue.js';

const MODES = [
  ['txt2img', 'text to image'],
  ['img2img', 'image to image'],
  ['inpaint', 'repaint a masked area'],
  ['controlnet', 'guided by a control image'],
  ['upscale', 'enlarge an image'],
  ['face_swap', 'swap a face'],
  ['animatediff', 'a short clip (AnimateDiff)'],
];

const IMAGE_INPUTS = [
  ['init_image', 'Init image', '(PNG/JPEG)'],
  ['mask_image', 'Mask image', '(white = repaint)'],
  ['control_image', 'Control image', ''],
  ['face_image', 'Face image', '(source face)'],
];

// The form's inputs by request field.
const FIELD_IDS = {
  prompt: 'studio-prompt',
  negative_prompt: 'studio-negative',
  seed: 'studio-seed',
  steps: 'studio-steps',
  cfg: 'studio-cfg',
  denoise: 'studio-denoise',
  width: 'studio-width',
  height: 'studio-height',
  checkpoint: 'studio-checkpoint',
  lora: 'studio-lora',
  lora_strength: 'studio-lora-strength',
  upscale_model: 'studio-upscale-model',
  controlnet_model: 'studio-controlnet-model',
  frames: 'studio-frames',
  fps: 'studio-fps',
  priority: 'studio-priority',
};

// A number input shown for the modes that use request field `field`.
function numberField(field, name, id, label, attrs) {
  return `<label class="field" data-field="${field}" for="${id}"><span class="field-label">${label}</span>
          <input id="${id}" name="${name}" type="number" ${attrs}></label>`;
}

const html = `
<div id="studio" class="studio">
  <p id="studio-sim-note" class="sim-note small" hidden></p>
  <div class="studio-grid">
    <section class="panel panel-submit" aria-labelledby="submit-title">
      <div class="panel-head"><h2 id="submit-title">New render</h2></div>
      <form id="studio-form" class="studio-form" autocomplete="off" novalidate data-needs="operator">
        <label class="field field-wide" for="studio-mode"><span class="field-label">Mode</span>
          <select id="studio-mode" name="mode">${MODES.map(([m, d]) => `<option value="${m}">${m} \u2014 ${d}</option>`).join('')}</select></label>
        <label class="field field-wide" data-field="prompt" for="studio-prompt"><span class="field-label">Prompt</span>
          <textarea id="studio-prompt" name="prompt" rows="3" spellcheck="false" placeholder="a lighthouse on a cliff at dusk, volumetric light"></textarea></label>
        <label class="field field-wide" data-field="negative_prompt" for="studio-negative"><span class="field-label">Negative prompt</span>
          <textarea id="studio-negative" name="negative_prompt" rows="2" spellcheck="false" placeholder="blurry, low quality"></textarea></label>
        ${IMAGE_INPUTS.map(([name, label, hint]) => `<div class="field field-wide" data-field="${name}">
          <label class="field-label" for="studio-${name.replace('_', '-')}">${label} <span class="small">${hint}</span></label>
          <input id="studio-${name.replace('_', '-')}" name="${name}" type="file" accept="image/png,image/jpeg" data-needs="operator"></div>`).join('')}
        <div class="field" data-field="seed">
          <label class="field-label" for="studio-seed">Seed</label>
          <div class="input-row">
            <input id="studio-seed" name="seed" type="number" min="0" step="1" inputmode="numeric" placeholder="random">
            <button id="studio-seed-random" class="btn btn-icon" type="button" title="random seed" aria-label="random seed">\u21bb</button>
          </div>
        </div>
        ${numberField('steps', 'steps', 'studio-steps', 'Steps', 'min="1" max="150" step="1" value="20"')}
        ${numberField('width', 'width', 'studio-width', 'Width', 'min="64" max="4096" step="8" value="512"')}
        ${numberField('height', 'height', 'studio-height', 'Height', 'min="64" max="4096" step="8" value="512"')}
        ${numberField('cfg', 'cfg', 'studio-cfg', 'CFG', 'min="0" max="30" step="0.5" value="7"')}
        ${numberField('denoise', 'denoise', 'studio-denoise', 'Denoise', 'min="0" max="1" step="0.05" value="0.75"')}
        ${numberField('frames', 'frames', 'studio-frames', 'Frames', 'min="2" max="256" step="1" value="16"')}
        ${numberField('fps', 'fps', 'studio-fps', 'Frames a second', 'min="1" max="60" step="1" value="8"')}
        <label class="field field-wide" data-field="checkpoint" for="studio-checkpoint"><span class="field-label">Checkpoint</span>
          <input id="studio-checkpoint" name="checkpoint" type="text" spellcheck="false" value="v1-5-pruned-emaonly.safetensors"></label>
        <label class="field" data-field="lora" for="studio-lora"><span class="field-label">LoRA <span class="small">(optional)</span></span>
          <input id="studio-lora" name="lora" type="text" spellcheck="false" placeholder="none"></label>
        ${numberField('lora', 'lora_strength', 'studio-lora-strength', 'LoRA strength', 'min="-4" max="4" step="0.05" value="1"')}
        <label class="field field-wide" data-field="upscale_model" for="studio-upscale-model"><span class="field-label">Upscale model</span>
          <input id="studio-upscale-model" name="upscale_model" type="text" spellcheck="false" value="4x-UltraSharp.pth"></label>
        <label class="field field-wide" data-field="controlnet_model" for="studio-controlnet-model"><span class="field-label">ControlNet model <span class="small">(optional)</span></span>
          <input id="studio-controlnet-model" name="controlnet_model" type="text" spellcheck="false" placeholder="server default"></label>
        <label class="field" for="studio-priority"><span class="field-label">Priority</span>
          <input id="studio-priority" name="priority" type="number" step="1" value="0"></label>
        <div class="form-actions field-wide">
          <button id="studio-submit" class="btn btn-primary" type="submit" data-needs="operator">Render</button>
          <span id="studio-notice" class="studio-notice" role="status" aria-live="polite"></span>
        </div>
        <div id="studio-error" class="studio-error field-wide" role="alert" hidden></div>
      </form>
    </section>

    <section class="panel panel-queue" aria-labelledby="queue-title">
      <div class="panel-head">
        <h2 id="queue-title">Queue</h2>
        <div class="queue-tools">
          <span id="studio-queue-count" class="queue-count" title="queued / cap">0 / \u2014</span>
          <button id="studio-pause" class="btn" type="button" data-paused="false" data-needs="operator">Pause queue</button>
        </div>
      </div>
      <div id="studio-paused" class="paused-banner" role="status" hidden></div>
      <div id="studio-queue-error" class="studio-error" role="alert" hidden></div>
      <div id="studio-comfyui" class="comfyui-list" aria-label="ComfyUI instances"></div>
      <div id="studio-queue" class="queue-list" aria-live="polite"></div>
      <div class="subhead">Recent failures</div>
      <ol id="studio-failures" class="failure-list"></ol>
    </section>

    <section class="panel panel-gallery" aria-labelledby="gallery-title">
      <div class="panel-head">
        <h2 id="gallery-title">Gallery</h2>
        <span id="studio-gallery-count" class="small muted">0</span>
      </div>
      <div id="studio-gallery" class="gallery"></div>
    </section>
  </div>
</div>`;

function mount(ctx) {
  const el = byIds({
    root: 'studio',
    form: 'studio-form',
    mode: 'studio-mode',
    seed: 'studio-seed',
    seedRandom: 'studio-seed-random',
    submit: 'studio-submit',
    notice: 'studio-notice',
    error: 'studio-error',
    simNote: 'studio-sim-note',
  });
  const inputs = byIds(FIELD_IDS);
  const files = byIds({ init_image: 'studio-init-image', mask_image: 'studio-mask-image', control_image: 'studio-control-image', face_image: 'studio-face-image' });
  const uploads = new WeakMap(); // File -> sha256 (a chosen file is uploaded once)
  let submitting = false;

  const queue = mountQueue();
  const gallery = mountGallery({
    reuse: reuseParams,
    post: (sha) => ctx.go('streambot', { artifact: sha }),
  });

  function applyMode() {
    const fields = modeFields(el.mode.value);
    for (const node of el.form.querySelectorAll('[data-field]')) node.hidden = fields.indexOf(node.dataset.field) === -1;
    el.root.dataset.mode = el.mode.value;
  }

  function formValues() {
    const values = {};
    for (const name of Object.keys(inputs)) values[name] = inputs[name].value;
    return values;
  }

  async function uploadImage(name, file) {
    const known = uploads.get(file);
    if (known) return { sha: known };
    const type = imageContentType(file.type, file.name);
    if (!type) return { error: name + ': ' + (file.name || 'the file') + ' is not a PNG or JPEG image' };
    if (file.size > MAX_INPUT_BYTES) return { error: name + ': ' + fmtBytes(file.size) + ' is larger than ' + fmtBytes(MAX_INPUT_BYTES) };
    const res = await api('/api/render/inputs', { method: 'POST', body: file, contentType: type });
    if (!res.ok) return { error: name + ': ' + res.message };
    const sha = isObj(res.data) ? str(res.data.sha256) : null;
    if (!sha) return { error: name + ': the server answered without a sha256' };
    uploads.set(file, sha);
    return { sha: sha };
  }

  function setSubmitting(on, label) {
    submitting = on;
    el.submit.disabled = on;
    el.submit.textContent = on ? label || 'Submitting\u2026' : 'Render';
  }

  // The chosen files of the images `mode` needs: `{ images }` or `{ error }`.
  function chosenImages(mode) {
    const images = {};
    for (const name of modeImages(mode)) {
      const file = files[name] && files[name].files && files[name].files[0];
      if (!file) return { error: mode + ' needs ' + name + ': choose a file' };
      images[name] = file;
    }
    return { images: images };
  }

  async function submitRender(ev) {
    ev.preventDefault();
    if (submitting) return;
    showError(el.error, '');
    el.notice.textContent = '';
    const mode = el.mode.value;
    if (modeFields(mode).indexOf('seed') !== -1 && el.seed.value.trim() === '') el.seed.value = String(randomSeed());
    const values = formValues();
    const check = buildRenderRequest(mode, values, {});
    const chosen = check.error ? check : chosenImages(mode);
    if (chosen.error) return showError(el.error, chosen.error);
    setSubmitting(true, Object.keys(chosen.images).length ? 'Uploading\u2026' : 'Submitting\u2026');
    try {
      const shas = {};
      for (const name of Object.keys(chosen.images)) {
        const up = await uploadImage(name, chosen.images[name]);
        if (up.error) return showError(el.error, up.error);
        shas[name] = up.sha;
      }
      const built = buildRenderRequest(mode, values, shas);
      if (built.error) return showError(el.error, built.error);
      setSubmitting(true, 'Submitting\u2026');
      const res = await api('/api/render/jobs', { method: 'POST', json: built.body });
      if (!res.ok) return showError(el.error, res.message);
      const id = isObj(res.data) ? str(res.data.job_id) : null;
      queue.setLastSubmitted(id);
      el.notice.dataset.jobId = id || '';
      el.notice.textContent = 'queued ' + tailId(id);
      if (id) el.notice.title = 'job ' + id + (res.data.correlation_id ? '\ncorrelation ' + res.data.correlation_id : '');
      refreshRender({ queue: true });
    } finally {
      setSubmitting(false);
    }
  }

  function reuseParams(job) {
    const reuse = jobFormValues(job);
    if (!reuse) return;
    if (reuse.mode) el.mode.value = reuse.mode;
    for (const name of Object.keys(reuse.values)) if (inputs[name]) inputs[name].value = reuse.values[name];
    applyMode();
    el.notice.textContent = 'parameters of ' + tailId(job.job_id) + ' loaded' + (modeImages(el.mode.value).length ? ' (choose the images again)' : '');
    el.form.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function renderSimNote() {
    const sim =
      queueJobs(studio).some((j) => isSimulated(j.backend)) ||
      (Array.isArray(studio.gallery) && studio.gallery.some((j) => isObj(j) && isObj(j.provenance) && isSimulated(j.provenance.backend)));
    el.simNote.hidden = !sim;
    el.simNote.textContent = sim ? 'Jobs marked SIMULATED GPU were rendered by the simulated backend (placeholder images).' : '';
  }

  subscribeRender((update) => {
    if (update.queue) queue.renderQueue();
    if (update.failures) queue.renderFailures();
    if (update.gallery) gallery.render();
    if (update.error !== undefined) queue.showRefreshError(update.error);
    renderSimNote();
    const queued = studio.queue && typeof studio.queue.queued === 'number' ? studio.queue.queued : 0;
    ctx.setBadge(queued ? String(queued) : '', '');
  });

  applyMode();
  el.mode.addEventListener('change', applyMode);
  el.seedRandom.addEventListener('click', () => {
    el.seed.value = String(randomSeed());
  });
  el.form.addEventListener('submit', submitRender);
  queue.renderQueue();
  queue.renderFailures();
  gallery.render();

  return {
    show(params) {
      const id = params && params.job;
      const target = id ? ctx.root.querySelector('[data-job-id="' + CSS.escape(id) + '"]') : null;
      if (!target) return;
      target.scrollIntoView({ block: 'center' });
      target.classList.add('focused');
      setTimeout(() => target.classList.remove('focused'), 2500);
    },
  };
}

export default {
  id: 'studio',
  title: 'Studio',
  subtitle: 'image generation on your GPU nodes: submit, watch the queue, keep what comes out',
  icon: 'M2 12l4-5 3 3 2-2 3 4zM11 4.5a1.5 1.5 0 1 0 0 .01',
  css: ['css/studio.css'],
  html: html,
  mount: mount,
};
