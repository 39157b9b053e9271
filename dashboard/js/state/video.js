// Script to video: projects and personas as `GET /api/video/projects[/{id}]` and
// `GET /api/video/personas` answer them, a project's pipeline as steps with their progress, and
// what each status allows. Pure: no DOM.

import { isObj, num, str } from './format.js';

/** One project (whole, or as listed). */
export function normalizeProject(p) {
  const d = isObj(p) ? p : {};
  const requested = isObj(d.requested) ? d.requested : {};
  const progress = isObj(d.progress) ? d.progress : {};
  const scenes = (Array.isArray(d.scenes) ? d.scenes : []).filter(isObj).map((s) => {
    const made = isObj(progress[String(s.n)]) ? progress[String(s.n)] : {};
    return {
      n: num(s.n) || 0,
      text: str(s.text) || '',
      prompt: str(s.prompt) || '',
      seed: num(s.seed),
      renderJob: str(made.render_job_id),
      picture: str(made.picture),
      narration: str(made.narration),
      durationMs: num(made.duration_ms) || 0,
    };
  });
  const persona = isObj(requested.persona) ? requested.persona : null;
  const failure = Array.isArray(d.failure) && d.failure.length === 2 ? { step: str(d.failure[0]) || '?', reason: str(d.failure[1]) || '' } : null;
  return {
    id: str(d.project_id) || '?',
    title: str(requested.title) || '(untitled)',
    status: str(d.status) || 'queued',
    format: str(requested.format) || '9:16',
    visuals: str(requested.visuals) === 'clips' ? 'clips' : 'stills',
    persona: persona ? str(persona.name) : null,
    priority: num(d.priority) || 0,
    script: str(d.script) || str(requested.script) || '',
    scenes: scenes,
    video: str(d.video),
    thumbnail: str(d.thumbnail),
    music: str(requested.music),
    cancelRequested: !!d.cancel_requested,
    failure: failure,
    post: isObj(requested.post) ? { text: str(requested.post.text) || '', destinations: (Array.isArray(requested.post.destinations) ? requested.post.destinations : []).map(str).filter(Boolean) } : null,
    posted: str(d.posted),
  };
}

/** Largest music file `POST /api/video/music` takes. */
export const MAX_MUSIC_BYTES = 64 * 1024 * 1024;

const AUDIO_EXTENSIONS = { mp3: 'audio/mpeg', wav: 'audio/wav', ogg: 'audio/ogg', oga: 'audio/ogg', opus: 'audio/ogg', flac: 'audio/flac', m4a: 'audio/mp4', aac: 'audio/mp4' };

/** The content type `POST /api/video/music` wants for a file, or null if it is not audio. */
export function audioContentType(type, name) {
  if (typeof type === 'string' && type.startsWith('audio/')) return type;
  const m = /\.([a-z0-9]+)$/.exec(typeof name === 'string' ? name.toLowerCase() : '');
  return m && AUDIO_EXTENSIONS[m[1]] ? AUDIO_EXTENSIONS[m[1]] : null;
}

/** The schedules answer → `{ name, cron, zone, title, source, persona, format, visuals, next, fired, last, lastProject, enabled, post }` each. */
export function normalizeSchedules(data) {
  const d = isObj(data) ? data : {};
  return (Array.isArray(d.schedules) ? d.schedules : []).filter((s) => isObj(s) && str(s.name)).map((s) => {
    const t = isObj(s.template) ? s.template : {};
    const scripts = Array.isArray(t.scripts) ? t.scripts.length : 0;
    const topics = Array.isArray(t.topics) ? t.topics.filter((x) => str(x)) : [];
    return {
      name: str(s.name),
      cron: str(s.cron) || '?',
      zone: str(s.time_zone) || 'UTC',
      title: str(t.title) || '(untitled)',
      source: scripts ? scripts + (scripts === 1 ? ' script' : ' scripts') : topics.length ? 'topics: ' + topics.join(', ') : 'nothing to make',
      persona: str(t.persona),
      format: str(t.format) || '9:16',
      visuals: str(t.visuals) === 'clips' ? 'clips' : 'stills',
      next: (Array.isArray(s.next) ? s.next : []).map(str).filter(Boolean),
      fired: num(s.fired) || 0,
      lastProject: str(s.last_project),
      enabled: s.enabled !== false,
      post: isObj(t.post) ? (Array.isArray(t.post.destinations) ? t.post.destinations : []).map(str).filter(Boolean) : [],
    };
  });
}

/**
 * The schedule form's values → the `PUT /api/video/schedules/{name}` body, or `{ error }`.
 * `lines` is the scripts (blank-line separated) or topics (one a line) text.
 */
export function buildSchedule(values) {
  const v = isObj(values) ? values : {};
  const name = (str(v.name) || '').trim();
  if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) return { error: 'name: 1-64 of a-z, 0-9, - and _' };
  const cron = (str(v.cron) || '').trim();
  if (!cron) return { error: 'a cron expression, e.g. 0 18 * * *' };
  const title = (str(v.title) || '').trim();
  if (!title) return { error: 'a title ({n} is the firing\u2019s number)' };
  const text = str(v.lines) || '';
  const template = { title: title, format: str(v.format) || '9:16' };
  if (v.source === 'topics') {
    template.topics = text.split('\n').map((t) => t.trim()).filter(Boolean);
    if (!template.topics.length) return { error: 'at least one topic, one a line' };
  } else {
    template.scripts = text.split(/\n\s*\n/).map((t) => t.trim()).filter(Boolean);
    if (!template.scripts.length) return { error: 'at least one script (scripts apart by a blank line)' };
  }
  if (str(v.persona)) template.persona = str(v.persona);
  if (v.visuals === 'clips') template.visuals = 'clips';
  const destinations = (Array.isArray(v.destinations) ? v.destinations : []).filter((d) => ['twitch', 'youtube', 'kick'].indexOf(d) !== -1);
  if (destinations.length) template.post = { text: (str(v.postText) || '').trim() || 'New video: {title}', destinations: destinations };
  return { name: name, body: { cron: cron, time_zone: (str(v.zone) || '').trim() || 'UTC', template: template, overlap: 'skip', missed: v.missed === 'catch_up_once' ? 'catch_up_once' : 'skip' } };
}

/** The list answer → projects. */
export function normalizeProjects(data) {
  const d = isObj(data) ? data : {};
  return (Array.isArray(d.projects) ? d.projects : []).filter((p) => isObj(p) && str(p.project_id)).map(normalizeProject);
}

/** The personas answer → `{ name, style, negative, voice, seed }` each. */
export function normalizePersonas(data) {
  const d = isObj(data) ? data : {};
  return (Array.isArray(d.personas) ? d.personas : []).filter((p) => isObj(p) && str(p.name)).map((p) => ({
    name: str(p.name),
    style: str(p.style_prompt) || '',
    negative: str(p.negative_prompt) || '',
    voice: str(p.voice) || 'espeak-ng:en-us',
    seed: seedWords(p.seed),
  }));
}

/** A seed policy in words. */
export function seedWords(seed) {
  if (!isObj(seed)) return 'seed 1';
  if (seed.policy === 'fixed') return 'seed ' + num(seed.seed);
  if (seed.policy === 'per_scene') return 'seed ' + num(seed.base) + ' + scene';
  return 'random seeds';
}

/** The pipeline's steps, each `{ name, done, of }` (`of`: how many there are to do). */
export function steps(project) {
  const n = project.scenes.length;
  const count = (key) => project.scenes.filter((s) => s[key]).length;
  return [
    { name: 'script', done: project.script ? 1 : 0, of: 1 },
    { name: 'scenes', done: n, of: n || 1 },
    { name: 'pictures', done: count('picture'), of: n || 1 },
    { name: 'narration', done: count('narration'), of: n || 1 },
    { name: 'assembly', done: project.video ? 1 : 0, of: 1 },
    { name: 'thumbnail', done: project.thumbnail ? 1 : 0, of: 1 },
  ];
}

/** What a person may do with a project in its status. */
export function actions(project) {
  return (project.status === 'queued' || project.status === 'running') && !project.cancelRequested ? ['cancel'] : [];
}

/** The queue: the projects still to finish, running first, then as the worker takes them
 * (priority, then age: ids are time-ordered UUIDv7s). */
export function queueOrder(projects) {
  const running = (p) => (p.status === 'running' ? 0 : 1);
  return projects
    .filter((p) => p.status === 'queued' || p.status === 'running')
    .slice()
    .sort((a, b) => running(a) - running(b) || b.priority - a.priority || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Whether a log entry changes what the room shows. */
export function touchesVideo(env) {
  return isObj(env) && (env.aggregate_type === 'video_project' || env.aggregate_type === 'video_persona' || env.aggregate_type === 'video_schedule');
}
