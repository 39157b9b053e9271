import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_MUSIC_BYTES, actions, audioContentType, buildSchedule, normalizePersonas, normalizeProject, normalizeProjects, normalizeSchedules, queueOrder, seedWords, steps, touchesVideo } from '../js/state/video.js';

const whole = {
  project_id: 'p1', status: 'running', priority: 2, script: 'One.\n\nTwo.',
  requested: { title: 'Nova', format: '16:9', persona: { name: 'nova' } },
  scenes: [{ n: 1, text: 'One.', prompt: 'neon, One.', seed: 7 }, { n: 2, text: 'Two.', prompt: 'neon, Two.', seed: 7 }],
  progress: { 1: { render_job_id: 'r1', picture: 'aa', narration: 'bb', duration_ms: 900 }, 2: { render_job_id: 'r2', picture: null, narration: 'cc', duration_ms: 800 } },
  video: null, thumbnail: null, cancel_requested: false, failure: null,
};

test('a project, its scenes and the pipeline in steps', () => {
  const p = normalizeProject(whole);
  assert.equal(p.title, 'Nova');
  assert.equal(p.persona, 'nova');
  assert.equal(p.scenes[0].picture, 'aa');
  assert.equal(p.scenes[1].picture, null);
  assert.deepEqual(steps(p).map((s) => s.name + ' ' + s.done + '/' + s.of), [
    'script 1/1', 'scenes 2/2', 'pictures 1/2', 'narration 2/2', 'assembly 0/1', 'thumbnail 0/1',
  ]);
  assert.deepEqual(actions(p), ['cancel']);
  assert.deepEqual(actions(normalizeProject(Object.assign({}, whole, { cancel_requested: true }))), []);
  assert.deepEqual(actions(normalizeProject(Object.assign({}, whole, { status: 'completed' }))), []);
});

test('a failure names its step; odd answers do not break it', () => {
  const failed = normalizeProject(Object.assign({}, whole, { status: 'failed', failure: ['render', 'scene 2: no picture'] }));
  assert.deepEqual(failed.failure, { step: 'render', reason: 'scene 2: no picture' });
  assert.deepEqual(normalizeProjects({ projects: [null, { nope: 1 }, whole] }).map((p) => p.id), ['p1']);
  assert.equal(normalizeProject(null).title, '(untitled)');
});

test('personas and their seed policies in words', () => {
  const personas = normalizePersonas({ personas: [{ name: 'nova', style_prompt: 'neon', seed: { policy: 'per_scene', base: 100 } }, { x: 1 }] });
  assert.equal(personas.length, 1);
  assert.equal(personas[0].seed, 'seed 100 + scene');
  assert.equal(personas[0].voice, 'espeak-ng:en-us');
  assert.equal(seedWords({ policy: 'fixed', seed: 7 }), 'seed 7');
  assert.equal(seedWords({ policy: 'random' }), 'random seeds');
  assert.ok(touchesVideo({ aggregate_type: 'video_project' }));
  assert.ok(!touchesVideo({ aggregate_type: 'render_job' }));
});

test('the queue runs first, then by priority, then by age', () => {
  const p = (id, status, priority) => ({ id: id, status: status, priority: priority });
  const order = queueOrder([p('01', 'queued', 0), p('02', 'completed', 9), p('03', 'queued', 5), p('04', 'running', 0), p('05', 'queued', 5)]);
  assert.deepEqual(order.map((x) => x.id), ['04', '03', '05', '01']);
});

test('schedules read back with their source, next firings and post', () => {
  const [s] = normalizeSchedules({ schedules: [{ name: 'nightly', cron: '30 2 * * *', time_zone: 'Europe/Berlin', template: { title: 'Night #{n}', topics: ['moons', 'tides'], visuals: 'clips', post: { text: 'x', destinations: ['kick'] } }, next: ['2026-12-08T01:30:00Z'], fired: 3 }] });
  assert.equal(s.source, 'topics: moons, tides');
  assert.equal(s.visuals, 'clips');
  assert.deepEqual(s.post, ['kick']);
  assert.equal(s.next.length, 1);
  assert.equal(s.fired, 3);
});

test('a schedule form becomes its body, or says what is missing', () => {
  const ok = buildSchedule({ name: 'daily', cron: '0 18 * * *', zone: 'Europe/Berlin', title: 'Fact #{n}', source: 'scripts', lines: 'One.\n\nTwo.\n\n\nThree.', visuals: 'clips', destinations: ['twitch'], postText: '' });
  assert.equal(ok.name, 'daily');
  assert.deepEqual(ok.body.template.scripts, ['One.', 'Two.', 'Three.']);
  assert.equal(ok.body.template.visuals, 'clips');
  assert.deepEqual(ok.body.template.post, { text: 'New video: {title}', destinations: ['twitch'] });
  assert.equal(ok.body.time_zone, 'Europe/Berlin');
  const topics = buildSchedule({ name: 'd', cron: '0 * * * *', title: 't', source: 'topics', lines: 'moons\n\ntides\n' });
  assert.deepEqual(topics.body.template.topics, ['moons', 'tides']);
  assert.equal('post' in topics.body.template, false);
  assert.match(buildSchedule({ name: 'Bad Name', cron: 'x', title: 't', lines: 'a' }).error, /name/);
  assert.match(buildSchedule({ name: 'd', cron: '', title: 't', lines: 'a' }).error, /cron/);
  assert.match(buildSchedule({ name: 'd', cron: '* * * * *', title: 't', source: 'topics', lines: ' ' }).error, /topic/);
});

test('a music file is known by its type, else by its name', () => {
  assert.equal(audioContentType('audio/mpeg', 'a.mp3'), 'audio/mpeg');
  assert.equal(audioContentType('', 'Tide.WAV'), 'audio/wav');
  assert.equal(audioContentType('application/octet-stream', 'x.opus'), 'audio/ogg');
  assert.equal(audioContentType('', 'song.m4a'), 'audio/mp4');
  assert.equal(audioContentType('image/png', 'cover.png'), null);
  assert.equal(audioContentType(undefined, undefined), null);
  assert.equal(MAX_MUSIC_BYTES, 64 * 1024 * 1024);
});

test('a project shows the music it was asked for', () => {
  const sha = 'a'.repeat(64);
  assert.equal(normalizeProject({ project_id: 'p', requested: { title: 't', music: sha } }).music, sha);
  assert.equal(normalizeProject({ project_id: 'p', requested: { title: 't' } }).music, null);
});
