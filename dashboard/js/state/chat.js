// Chat: per-server settings as the form shows them and as the API takes them, and how the
// command log reads. Pure: works on plain values, no DOM.

import { isObj, plain, str } from './format.js';

const COMMANDS = ['imagine', 'status', 'queue', 'cancel'];
const DEFAULTS = { cooldown_secs: 30, quota: 20, quota_window_secs: 3600, refusals: 'auto' };

/** What becomes of refused commands' replies, as the settings name it and the form says it. */
export const REFUSALS = [
  ['auto', 'each answered; summarised in a flood'],
  ['summary', 'summarised'],
  ['silent', 'not answered'],
];

export function commandPrefix(platform) {
  return platform === 'discord' ? '/' : '!';
}

export function rolesHint(platform) {
  return platform === 'discord' ? '(role ids, or administrator; comma separated)' : '(badges: broadcaster, moderator, vip, subscriber)';
}

/** "Discord guild 123" / "Twitch #name". */
export function scopeLabel(platform, scope) {
  return (platform === 'discord' ? 'Discord guild ' : 'Twitch #') + plain(scope);
}

/** A guild id or channel as the API names it: trimmed, no leading '#', lower case. */
export function normalizeScope(raw) {
  return plain(raw).trim().replace(/^#/, '').toLowerCase();
}

/**
 * The form's values for `settings` (the API's shape): strings for the inputs, one rule per
 * command with its roles comma separated.
 */
export function settingsToForm(settings) {
  const s = isObj(settings) ? settings : {};
  const rules = isObj(s.commands) ? s.commands : {};
  return {
    rules: COMMANDS.map((name) => {
      const rule = isObj(rules[name]) ? rules[name] : {};
      return { command: name, enabled: rule.enabled !== false, roles: Array.isArray(rule.roles) ? rule.roles.join(', ') : '' };
    }),
    cooldown: String(s.cooldown_secs ?? DEFAULTS.cooldown_secs),
    quota: String(s.quota ?? DEFAULTS.quota),
    quotaWindow: String(s.quota_window_secs ?? DEFAULTS.quota_window_secs),
    refusals: REFUSALS.some(([v]) => v === s.refusals) ? s.refusals : DEFAULTS.refusals,
    nickname: str(s.nickname) || '',
    avatar: str(s.avatar) || '',
  };
}

function whole(raw, label, min, max) {
  const t = plain(raw).trim();
  const n = Number(t);
  if (t === '' || !Number.isInteger(n) || n < min || n > max) throw new Error(label + ' must be a whole number from ' + min + ' to ' + max);
  return n;
}

/**
 * The settings to PUT from the form's values: `{ settings }`, or `{ error }` saying what is
 * wrong. A rule is sent only where it differs from the default (on, for everyone); the bot's
 * nickname and avatar exist in Discord guilds only.
 */
export function formToSettings(platform, form) {
  const f = isObj(form) ? form : {};
  const commands = {};
  for (const rule of Array.isArray(f.rules) ? f.rules : []) {
    if (!isObj(rule) || COMMANDS.indexOf(rule.command) === -1) continue;
    const roles = plain(rule.roles)
      .split(',')
      .map((r) => r.trim())
      .filter((r) => r !== '');
    const enabled = rule.enabled !== false;
    if (!enabled || roles.length) commands[rule.command] = { enabled: enabled, roles: roles };
  }
  let settings;
  try {
    settings = {
      commands: commands,
      cooldown_secs: whole(f.cooldown, 'cooldown', 0, 86400),
      quota: whole(f.quota, 'quota', 0, 4294967295),
      quota_window_secs: whole(f.quotaWindow, 'quota window', 1, 86400),
    };
    const refusals = f.refusals === undefined ? DEFAULTS.refusals : f.refusals;
    if (!REFUSALS.some(([v]) => v === refusals)) throw new Error('refusals must be one of ' + REFUSALS.map(([v]) => v).join(', '));
    settings.refusals = refusals;
  } catch (e) {
    return { error: e.message };
  }
  if (platform === 'discord') {
    const nickname = plain(f.nickname).trim();
    const avatar = plain(f.avatar).trim();
    if (nickname) settings.nickname = nickname;
    if (avatar) settings.avatar = avatar;
  }
  return { settings: settings };
}

/** How a command ended, for its badge: `{ cls, label }`. */
export function commandOutcome(command) {
  switch (command.status) {
    case 'job':
      return { cls: 'job', label: 'job ' + (str(command.job_status) || 'submitted') };
    case 'rejected':
      return { cls: 'rejected', label: 'rejected: ' + (str(command.reason) || '?') };
    case 'answered':
      return { cls: 'answered', label: 'answered' };
    default:
      return { cls: 'received', label: str(command.status) || 'received' };
  }
}

/** Where a command was typed: "#channel" or "guild 123". */
export function commandWhere(command) {
  return command.platform === 'twitch' ? '#' + plain(command.scope) : 'guild ' + plain(command.scope);
}

/** The command as the user typed it. */
export function commandTyped(command) {
  return commandPrefix(command.platform) + plain(command.command) + (command.args ? ' ' + command.args : '');
}

/** Changes exactly when what the command caused may have changed (a decision, the job, a reply). */
export function commandKey(command) {
  return [command.status, command.job_status, command.reply, command.reply_error, command.updated_at].join('|');
}

/** Whether an event may change the command log. */
export function touchesChat(env) {
  return (
    isObj(env) &&
    (env.aggregate_type === 'chat_command' || env.aggregate_type === 'chat_settings' || (env.aggregate_type === 'render_job' && env.type !== 'render.job_progressed'))
  );
}
