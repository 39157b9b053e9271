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
    persona: persona ? str(persona.name) : null,
    priority: num(d.priority) || 0,
    script: str(d.script) || str(requested.script) || '',
    scenes: scenes,
    video: str(d.video),
    thumbnail: str(d.thumbnail),
    cancelRequested: !!d.cancel_requested,
    failure: failure,
  };
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

/** Whether a log entry changes what the room shows. */
export function touchesVideo(env) {
  return isObj(env) && (env.aggregate_type === 'video_project' || env.aggregate_type === 'video_persona');
}
