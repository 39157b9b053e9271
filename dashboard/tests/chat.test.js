// Chat settings form <-> API JSON, the command log's wording, and the Stream Bot's posts.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { commandKey, commandOutcome, commandTyped, commandWhere, formToSettings, normalizeScope, scopeLabel, settingsToForm, touchesChat } from '../js/state/chat.js';
import { buildPost, destinationOutcome, isSha256, postSummary } from '../js/state/posts.js';

test('settings fill the form: defaults where nothing is saved', () => {
  const form = settingsToForm({});
  assert.deepEqual(form.rules.map((r) => [r.command, r.enabled, r.roles]), [
    ['imagine', true, ''],
    ['status', true, ''],
    ['queue', true, ''],
    ['cancel', true, ''],
  ]);
  assert.deepEqual([form.cooldown, form.quota, form.quotaWindow, form.refusals, form.nickname, form.avatar], ['30', '20', '3600', 'auto', '', '']);
  const saved = settingsToForm({ commands: { queue: { enabled: true, roles: ['777', 'administrator'] }, cancel: { enabled: false, roles: [] } }, cooldown_secs: 0, quota: 5, quota_window_secs: 60, nickname: 'Bot' });
  assert.equal(saved.rules[2].roles, '777, administrator');
  assert.equal(saved.rules[3].enabled, false);
  assert.equal(saved.cooldown, '0', 'a zero cooldown is not the default');
  assert.equal(saved.nickname, 'Bot');
});

test('the form becomes the API body, and back again', () => {
  const settings = { commands: { queue: { enabled: true, roles: ['777'] }, cancel: { enabled: false, roles: [] } }, cooldown_secs: 5, quota: 20, quota_window_secs: 3600, refusals: 'summary', nickname: 'Studio Bot' };
  const form = settingsToForm(settings);
  assert.deepEqual(formToSettings('discord', form), { settings: settings });
  const edited = Object.assign({}, form, { rules: form.rules.map((r) => (r.command === 'imagine' ? { command: 'imagine', enabled: true, roles: ' a , ,b ' } : r)) });
  assert.deepEqual(formToSettings('discord', edited).settings.commands.imagine, { enabled: true, roles: ['a', 'b'] });
});

test('Twitch has no nickname or avatar; values are checked', () => {
  const form = Object.assign(settingsToForm({}), { nickname: 'X', avatar: 'https://a/b.png' });
  assert.equal('nickname' in formToSettings('twitch', form).settings, false);
  assert.equal(formToSettings('discord', form).settings.avatar, 'https://a/b.png');
  assert.deepEqual(formToSettings('discord', Object.assign({}, form, { cooldown: '1.5' })), { error: 'cooldown must be a whole number from 0 to 86400' });
  assert.deepEqual(formToSettings('discord', Object.assign({}, form, { quotaWindow: '0' })), { error: 'quota window must be a whole number from 1 to 86400' });
  assert.deepEqual(formToSettings('discord', Object.assign({}, form, { quota: '' })), { error: 'quota must be a whole number from 0 to 4294967295' });
  assert.deepEqual(formToSettings('twitch', Object.assign({}, form, { refusals: 'loud' })), { error: 'refusals must be one of auto, summary, silent' });
  assert.equal(settingsToForm({ refusals: 'nonsense' }).refusals, 'auto');
});

test('scopes', () => {
  assert.equal(normalizeScope('  #MyChannel '), 'mychannel');
  assert.equal(normalizeScope(null), '');
  assert.equal(scopeLabel('discord', '123'), 'Discord guild 123');
  assert.equal(scopeLabel('twitch', 'chan'), 'Twitch #chan');
});

test('the command log reads like chat', () => {
  const cmd = { platform: 'discord', scope: '99', command: 'imagine', args: 'a comet', status: 'job', job_status: 'completed' };
  assert.equal(commandTyped(cmd), '/imagine a comet');
  assert.equal(commandTyped({ platform: 'twitch', command: 'status', args: '' }), '!status');
  assert.equal(commandWhere(cmd), 'guild 99');
  assert.equal(commandWhere({ platform: 'twitch', scope: 'chan' }), '#chan');
  assert.deepEqual(commandOutcome(cmd), { cls: 'job', label: 'job completed' });
  assert.deepEqual(commandOutcome({ status: 'rejected', reason: 'cooldown' }), { cls: 'rejected', label: 'rejected: cooldown' });
  assert.deepEqual(commandOutcome({ status: 'job' }), { cls: 'job', label: 'job submitted' });
  assert.deepEqual(commandOutcome({}), { cls: 'received', label: 'received' });
  assert.notEqual(commandKey(cmd), commandKey(Object.assign({}, cmd, { reply: 'here it is' })));
  assert.equal(touchesChat({ aggregate_type: 'chat_command', type: 'chat.reply_sent' }), true);
  assert.equal(touchesChat({ aggregate_type: 'render_job', type: 'render.job_progressed' }), false);
  assert.equal(touchesChat({ aggregate_type: 'render_job', type: 'render.job_completed' }), true);
  assert.equal(touchesChat({ aggregate_type: 'node', type: 'node.registered' }), false);
});

test('a post needs text and a destination', () => {
  const sha = 'a'.repeat(64);
  assert.deepEqual(buildPost('  hi  ', ['twitch', 'myspace'], sha), { body: { text: 'hi', destinations: ['twitch'], artifact: sha } });
  assert.deepEqual(buildPost('hi', ['kick'], null), { body: { text: 'hi', destinations: ['kick'] } });
  assert.deepEqual(buildPost(' ', ['kick'], null), { error: 'write the announcement' });
  assert.deepEqual(buildPost('hi', [], null), { error: 'choose where to post' });
  assert.equal(isSha256(sha), true);
  assert.equal(isSha256('A'.repeat(64)), false);
  assert.equal(isSha256('abc'), false);
});

test('each destination reports its outcome; the post is done when none is pending', () => {
  assert.deepEqual(destinationOutcome('kick', { status: 'delivered', text: 'sent' }), { cls: 'delivered', label: 'kick \u2713', title: 'sent' });
  assert.deepEqual(destinationOutcome('twitch', { status: 'pending', attempts: 2, last_error: '503' }), { cls: 'pending', label: 'twitch retrying (2)', title: '503' });
  assert.deepEqual(destinationOutcome('youtube', { status: 'failed', error: 'no broadcast' }), { cls: 'failed', label: 'youtube failed', title: 'no broadcast' });
  assert.equal(postSummary({ destinations: { kick: { status: 'delivered' }, twitch: { status: 'pending' } } }), null);
  assert.equal(postSummary({ destinations: { kick: { status: 'delivered' }, twitch: { status: 'delivered' } } }), 'posted');
  assert.equal(postSummary({ destinations: { kick: { status: 'delivered' }, twitch: { status: 'failed' } } }), 'posted, with failures');
  assert.equal(postSummary({ destinations: {} }), null);
  assert.equal(postSummary(undefined), null);
});
