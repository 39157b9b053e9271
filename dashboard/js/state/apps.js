// The Deploy Center: apps as `GET /api/apps` lists them and one app with its runs as `GET
// /api/apps/{name}` answers. Pure: no DOM.

import { isObj, num, str } from './format.js';
import { actorName } from './approvals.js';

/** `GET /api/apps` → `[{ name, live, releases, nodes, containers }]` by name. */
export function normalizeApps(data) {
  const apps = isObj(data) && Array.isArray(data.apps) ? data.apps : [];
  return apps
    .filter((a) => isObj(a) && str(a.name))
    .map((a) => {
      const def = isObj(a.definition) ? a.definition : {};
      return {
        name: str(a.name),
        live: num(a.live_release),
        releases: Array.isArray(a.releases) ? a.releases.length : 0,
        nodes: (Array.isArray(def.nodes) ? def.nodes : []).map(str).filter(Boolean),
        containers: (Array.isArray(def.containers) ? def.containers : []).filter(isObj).map((c) => str(c.name) || '?'),
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function images(containers) {
  return (Array.isArray(containers) ? containers : [])
    .filter(isObj)
    .map((c) => (str(c.name) || '?') + ': ' + (isObj(c.spec) ? str(c.spec.image) || '?' : '?'));
}

/**
 * `GET /api/apps/{name}` → `{ name, live, nodes, health, releases (newest first: { number,
 * hash, images, live, good }), runs (newest first) }`.
 */
export function normalizeApp(data) {
  const d = isObj(data) ? data : {};
  const def = isObj(d.definition) ? d.definition : {};
  const live = num(d.live_release);
  const good = (Array.isArray(d.good_releases) ? d.good_releases : []).map(num).filter((n) => n !== null);
  const releases = (Array.isArray(d.releases) ? d.releases : [])
    .filter((r) => isObj(r) && num(r.number) !== null)
    .map((r) => ({
      number: num(r.number),
      hash: (str(r.spec_hash) || '').slice(0, 12),
      images: images(r.containers),
      live: num(r.number) === live,
      good: good.indexOf(num(r.number)) >= 0,
    }))
    .sort((a, b) => b.number - a.number);
  const health = isObj(def.health) ? def.health : {};
  const git = isObj(def.git) ? def.git : null;
  return {
    name: str(d.name) || '?',
    live: live,
    nodes: (Array.isArray(def.nodes) ? def.nodes : []).map(str).filter(Boolean),
    images: images(def.containers),
    check: str(health.http) || (str(health.tcp) ? 'tcp ' + str(health.tcp) : 'none (started counts)'),
    source: git
      ? (str(git.repo) || '?') + ' @ ' + (str(git.branch) || '?') + (str(git.build_command) ? ', built by: ' + str(git.build_command) : ', built from ' + (str(git.dockerfile) || 'Dockerfile'))
      : null,
    releases: releases,
    runs: (Array.isArray(d.runs) ? d.runs : []).filter(isObj).map(normalizeRun),
  };
}

/** A run (`GET /api/deploys/{id}` or an app's `runs`) as the page shows it. */
export function normalizeRun(r) {
  return {
    id: str(r.run_id) || '?',
    release: num(r.release),
    previous: num(r.previous),
    trigger: str(r.trigger) || 'manual',
    by: actorName(r.requested_by),
    at: str(r.requested_at),
    status: str(r.status) || 'running',
    live: num(r.live_release),
    error: str(r.error) || '',
    approval: str(r.approval_id),
    steps: (Array.isArray(r.steps) ? r.steps : []).filter(isObj).map((s) => ({
      step: str(s.step) || '?',
      status: str(s.status) || 'running',
      output: str(s.output) || '',
      error: str(s.error) || '',
    })),
  };
}

/** A step's name in words. */
export function stepWords(step) {
  return { approval: 'approval', stop_old: 'stop old release', start_new: 'start new release', health: 'health check', rollback: 'roll back' }[step] || step;
}

/** A run's status in words, with the release it left live. */
export function runWords(run) {
  switch (run.status) {
    case 'succeeded':
      return 'release ' + run.release + ' live';
    case 'rolled_back':
      return 'rolled back: release ' + run.live + ' live again';
    case 'refused':
      return 'refused at approval';
    case 'failed':
      return 'failed' + (run.live !== null ? ' (release ' + run.live + ' still live)' : '');
    default:
      return run.approval && !run.steps.some((s) => s.step !== 'approval') ? 'waiting for approval' : 'running';
  }
}

/** Whether an event should make the room ask again. */
export function touchesApps(env) {
  return isObj(env) && (env.aggregate_type === 'app' || env.aggregate_type === 'deploy_run');
}
