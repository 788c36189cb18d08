import Koa from 'koa';
import { beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError, idempotency } from '../src/index.js';
import { idempotentFetch } from '../src/entries/client.js';
import { databaseTargets } from './helpers/databases.js';
import { serve } from './helpers/http.js';
import { libraryProblem, notNow, type ScriptedServer } from './helpers/scripted-server.js';
import { post, QUICK, scriptedClientEnvironment, UUID } from './helpers/scripted-client.js';

/** idempotentFetch's Idempotency-Key: generated, given, or derived from ctx.idempotency (test/helpers/scripted-client.ts). */

const client = scriptedClientEnvironment();
const { keysSent } = client;
let scripted: ScriptedServer;
beforeAll(() => {
  ({ scripted } = client);
});

describe('the key', () => {
  it('is a fresh random UUID when none is given, sent unchanged on every retry with the same body', async () => {
    scripted.script(['reset', notNow(503, '0'), notNow(429), libraryProblem('inProgress', '0'), { status: 201, body: { id: 'p1' } }]);
    const result = await idempotentFetch(`${scripted.url}/payments`, post({ amount: 4200 }), QUICK);

    expect(result.status).toBe(201);
    expect(await result.response.json()).toEqual({ id: 'p1' });
    expect(result.attempts).toBe(5);
    expect(result.key).toMatch(UUID);
    expect(keysSent()).toEqual(Array(5).fill(result.key));
    expect(scripted.requests.map((request) => request.body)).toEqual(Array(5).fill('{"amount":4200}'));
    expect(result.history.map((attempt) => attempt.status ?? attempt.failure)).toEqual(['network-error', 503, 429, 409, 201]);
    expect(result.stoppedBy).toBe('answer');
  });

  it('is a new one for every call', async () => {
    scripted.script([{ status: 204 }]);
    const first = await idempotentFetch(scripted.url, post());
    const second = await idempotentFetch(scripted.url, post());
    expect(first.key).not.toBe(second.key);
  });

  it('is the one given, or the one already in the headers, and two different keys are refused before sending', async () => {
    scripted.script([notNow(503, '0'), { status: 201 }]);
    expect((await idempotentFetch(scripted.url, post(), { ...QUICK, key: 'order-17' })).key).toBe('order-17');
    expect(keysSent()).toEqual(['order-17', 'order-17']);

    scripted.script([{ status: 201 }]);
    const init = { ...post(), headers: { 'content-type': 'application/json', 'Idempotency-Key': 'from-headers' } };
    expect((await idempotentFetch(scripted.url, init)).key).toBe('from-headers');
    await expect(idempotentFetch(scripted.url, init, { key: 'another' })).rejects.toBeInstanceOf(IdempotencyConfigError);
    expect(keysSent()).toEqual(['from-headers']);
  });

  it('is derived from ctx.idempotency inside a handler, so a retry of the outer request sends the same downstream key', async () => {
    const database = await databaseTargets()[0]!.open('client_derived_key');
    const store = await database.store();
    const app = new Koa();
    app.use(idempotency({ store }));
    app.use(async (ctx) => {
      const downstream = await idempotentFetch(scripted.url, post(), { ...QUICK, maxAttempts: 2, key: { from: ctx.idempotency!, label: 'ledger-entry' } });
      ctx.status = downstream.status === 201 ? 201 : 503; // a 5xx is not stored: the outer retry runs again
      ctx.body = { downstreamKey: downstream.key, expected: ctx.idempotency!.deriveKey('ledger-entry') };
    });
    const api = await serve(app);
    try {
      const outer = () => fetch(api.url, { method: 'POST', headers: { 'idempotency-key': 'outer-1' } });
      scripted.script([notNow(503, '0'), notNow(503, '0'), { status: 201 }]);
      const failed = await outer();
      const retried = await outer();
      expect([failed.status, retried.status]).toEqual([503, 201]);
      const { downstreamKey, expected } = (await retried.json()) as { downstreamKey: string; expected: string };
      expect(downstreamKey).toBe(expected);
      expect(downstreamKey).not.toBe('outer-1');
      expect(keysSent()).toEqual([downstreamKey, downstreamKey, downstreamKey]);
    } finally {
      await api.close();
      await database.close();
    }
  });
});
