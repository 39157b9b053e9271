// Setup: the first-run wizard. It walks an admin through signing in, naming this node (a site
// name and its tags), adding another node (its NATS credentials and the exact commands that
// join it), chat and platform tokens into the vault, a domain, and a first test render. Each
// step is recorded on the server, so the wizard resumes where it stopped; until it is done or
// put away, its nav entry counts the steps left and the Overview leads to it.

import { api } from '../api.js';
import { button, h, hc } from '../dom.js';
import { parseTags, normalizeSetup, shouldOpen } from '../state/setup.js';

const html = `
<section class="panel panel-setup" aria-label="Setup">
  <ol id="setup-steps" class="setup-steps"></ol>
  <div id="setup-step" class="setup-step"></div>
  <div class="setup-foot">
    <span id="setup-message" class="small" aria-live="polite"></span>
    <button id="setup-dismiss" class="btn btn-small" type="button" data-needs="admin">Put the wizard away</button>
  </div>
</section>`;

function input(name, placeholder, type) {
  const el = h('input');
  el.name = name;
  el.placeholder = placeholder || '';
  el.type = type || 'text';
  el.autocomplete = 'off';
  return el;
}

function field(label, el) {
  return hc('label', 'setup-field', [h('span', 'small', label), el]);
}

function mount(ctx) {
  const root = ctx.root;
  const list = root.querySelector('#setup-steps');
  const panel = root.querySelector('#setup-step');
  const message = root.querySelector('#setup-message');
  const dismissButton = root.querySelector('#setup-dismiss');
  let setup = null;
  let who = null;
  let current = null;
  let watching = null; // the test render followed: { id, seen(env) }

  function say(text, ok) {
    message.textContent = text;
    message.className = 'small ' + (ok === false ? 'bad' : 'ok');
  }

  async function done(step, detail) {
    const res = await api('/api/setup/steps/' + step, { method: 'POST', json: { detail: detail || '' } });
    if (!res.ok) return say(res.message, false);
    current = null;
    await load();
  }

  function stepPanel(step) {
    const parts = [h('h2', 'setup-title', step.title)];
    const actions = h('div', 'setup-actions');
    const go = (label, fn) => {
      const b = button(label, 'btn-small btn-primary');
      b.dataset.action = 'do';
      b.addEventListener('click', async () => {
        b.disabled = true;
        try {
          await fn();
        } finally {
          b.disabled = false;
        }
      });
      actions.appendChild(b);
    };
    switch (step.id) {
      case 'sign_in':
        parts.push(h('p', null, who ? 'Signed in as ' + who.name + ' (' + who.role + '). Keep the bootstrap token somewhere safe, or make a named token in Access and use that.' : 'Sign in with the bootstrap token (printed on first start, or in <state_dir>/admin-token).'));
        go('Continue', () => done('sign_in', who ? 'signed in as ' + who.name : ''));
        break;
      case 'name_node': {
        const site = input('site', 'my homelab');
        const tags = input('tags', 'prod, gpu');
        parts.push(h('p', null, 'This machine is node ' + setup.nodeId + '. Give the site a name and the node its tags (approval rules match on them).'));
        parts.push(field('site name', site), field('tags of ' + setup.nodeId, tags));
        go('Save', async () => {
          const list = parseTags(tags.value);
          const res = await api('/api/nodes/' + encodeURIComponent(setup.nodeId) + '/tags', { method: 'PUT', json: { tags: list } });
          if (!res.ok) return say(res.message, false);
          await done('name_node', 'site ' + (site.value.trim() || 'unnamed') + '; ' + setup.nodeId + ' tagged ' + (list.join(', ') || 'nothing'));
        });
        break;
      }
      case 'add_node': {
        const node = input('node', 'gpu-2');
        const out = h('pre', 'setup-command');
        out.hidden = true;
        parts.push(h('p', null, 'Name the new node: its agent credentials are made now and shown once, with the exact commands to run.'));
        parts.push(field('node id', node), out);
        go('Make its credentials', async () => {
          const res = await api('/api/setup/join', { method: 'POST', json: { node_id: node.value.trim() } });
          if (!res.ok) return say(res.message, false);
          out.textContent = '# on this machine\n' + res.data.reload + '\n\n# on ' + res.data.node_id + '\n' + res.data.command;
          out.hidden = false;
          say('credentials for ' + res.data.node_id + ' made: copy the commands now (the seed is not shown again)');
          const next = button('Continue', 'btn-small');
          next.dataset.action = 'next';
          next.addEventListener('click', () => {
            current = null;
            load();
          });
          out.after(next);
        });
        break;
      }
      case 'tokens': {
        const names = [['discord', 'Discord bot token'], ['twitch', 'Twitch OAuth token'], ['youtube', 'YouTube token'], ['kick', 'Kick token']];
        const inputs = names.map(([name, label]) => [name, input('secret-' + name, label, 'password')]);
        parts.push(h('p', null, 'Tokens go into the vault (sealed; never shown again); a configuration names one as secret:<name>.'));
        for (const [name, el] of inputs) parts.push(field(name, el));
        go('Store them', async () => {
          const stored = [];
          for (const [name, el] of inputs) {
            if (!el.value) continue;
            const res = await api('/api/secrets/' + name, { method: 'PUT', json: { value: el.value } });
            if (!res.ok) return say(name + ': ' + res.message, false);
            el.value = '';
            stored.push(name);
          }
          await done('tokens', stored.length ? 'stored ' + stored.join(', ') : 'none');
        });
        break;
      }
      case 'domain': {
        const host = input('host', 'home.example.com');
        const upstream = input('upstream', '127.0.0.1:8080');
        parts.push(h('p', null, 'A host name Caddy serves (with TLS) and where it goes; more in Domains.'));
        parts.push(field('host', host), field('goes to (host:port)', upstream));
        go('Add it', async () => {
          const res = await api('/api/domains', { method: 'POST', json: { host: host.value.trim().toLowerCase(), upstream: upstream.value.trim() } });
          if (!res.ok) return say(res.message, false);
          await done('domain', res.data.host);
        });
        break;
      }
      case 'first_render': {
        const result = h('div', 'small');
        parts.push(h('p', null, 'A small test image through the render queue (on the simulated GPU unless ComfyUI is set up).'), result);
        go('Render a test image', async () => {
          const res = await api('/api/render/jobs', { method: 'POST', json: { mode: 'txt2img', params: { prompt: 'a lighthouse at dusk, test render', steps: 4, width: 256, height: 256 }, source: 'setup' } });
          if (!res.ok) return say(res.message, false);
          const id = res.data.job_id;
          result.textContent = 'job ' + id + ' queued\u2026';
          // Its end comes on the live feed (the read model may lag it); other events of the job
          // refresh what it is doing. Given up after 2 minutes.
          const status = await new Promise((resolve) => {
            const timer = setTimeout(() => finish('not done after 2 minutes'), 120000);
            function finish(outcome) {
              clearTimeout(timer);
              watching = null;
              resolve(outcome);
            }
            async function check() {
              const job = await api('/api/render/jobs/' + encodeURIComponent(id));
              const now = job.ok ? job.data.status : null;
              if (now === 'completed' || now === 'failed' || now === 'cancelled') return finish(now);
              result.textContent = 'job ' + id + ' ' + (now || 'queued') + '\u2026';
            }
            const ends = { 'render.job_completed': 'completed', 'render.job_failed': 'failed', 'render.job_cancelled': 'cancelled' };
            watching = { id: id, seen: (env) => (env.type in ends ? finish(ends[env.type]) : check()) };
            check();
          });
          if (status !== 'completed') return say('the test render: ' + status, false);
          result.textContent = '';
          result.appendChild(h('span', 'ok', 'job ' + id + ' completed \u2014 '));
          const link = h('a', null, 'see it in the Studio');
          link.href = ctx.href('studio', { job: id });
          result.appendChild(link);
          return done('first_render', 'job ' + id);
        });
        break;
      }
      default:
        break;
    }
    if (step.skip) {
      const skip = button('Skip', 'btn-small');
      skip.dataset.action = 'skip';
      skip.addEventListener('click', () => done(step.id, 'skipped'));
      actions.appendChild(skip);
    }
    parts.push(actions);
    return parts;
  }

  function renderSteps() {
    list.textContent = '';
    for (const s of setup.steps) {
      const li = h('li', 'setup-step-item' + (s.done ? ' done' : '') + (s.id === current ? ' current' : ''));
      li.dataset.step = s.id;
      li.dataset.done = String(s.done);
      li.appendChild(h('span', 'setup-mark', s.done ? '\u2713' : '\u2022'));
      const a = h('a', null, s.title);
      a.href = '#';
      a.addEventListener('click', (ev) => {
        ev.preventDefault();
        current = s.id;
        render();
      });
      li.appendChild(a);
      if (s.detail) li.appendChild(h('span', 'small muted', ' \u2014 ' + s.detail));
      list.appendChild(li);
    }
  }

  function render() {
    if (!setup) return;
    if (current === null) current = setup.next;
    renderSteps();
    panel.textContent = '';
    if (current === null) {
      panel.appendChild(h('p', 'ok', 'Setup is done. Every step can be opened again from the list.'));
      return;
    }
    for (const part of stepPanel(setup.steps.find((s) => s.id === current))) panel.appendChild(part);
  }

  async function load() {
    const res = await api('/api/setup');
    if (!res.ok) return;
    setup = normalizeSetup(res.data);
    render();
    const left = setup.steps.filter((s) => !s.done);
    ctx.setBadge(shouldOpen(setup, who) ? String(left.length) : '', 'warn');
    ctx.publish('setup', {
      done: setup.steps.length - left.length,
      total: setup.steps.length,
      left: left.length,
      dismissed: setup.dismissed,
      nextTitle: left.length ? left[0].title.toLowerCase() : '',
    });
  }

  dismissButton.addEventListener('click', async () => {
    const res = await api('/api/setup/dismiss', { method: 'POST', json: {} });
    say(res.ok ? 'put away: Setup stays in the navigation' : res.message, res.ok);
    if (res.ok) ctx.go('overview', {});
  });
  ctx.onChanges((changes) => {
    for (const item of changes.events) {
      if (watching && item.env && item.env.aggregate_id === watching.id) watching.seen(item.env);
    }
  });
  ctx.subscribe('whoami', (value) => {
    who = value;
    if (who && who.role === 'admin') load();
  });

  return {
    // Opening the room reopens a wizard that was put away.
    async show() {
      await load();
      if (setup && setup.dismissed) {
        await api('/api/setup/reopen', { method: 'POST', json: {} });
        load();
      }
    },
  };
}

export default {
  id: 'setup',
  title: 'Setup',
  subtitle: 'the first-run wizard: sign in, name this node, add nodes, tokens, a domain, a first render',
  icon: 'M8 1v3M8 12v3M1 8h3M12 8h3M3 3l2 2M11 11l2 2M13 3l-2 2M5 11l-2 2',
  needs: 'admin',
  css: ['css/setup.css'],
  html: html,
  mount: mount,
};
