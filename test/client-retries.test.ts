import { beforeAll, describe, expect, it } from 'vitest';
import { problemType } from '../src/index.js';
import { idempotentFetch } from '../src/entries/client.js';
import { libraryProblem, notNow, type ScriptedServer } from './helpers/scripted-server.js';
import { post, QUICK, scriptedClientEnvironment } from './helpers/scripted-client.js';

/** Which answers idempotentFetch retries and which it returns at once (test/helpers/scripted-client.ts). */

const client = scriptedClientEnvironment();
const { keysSent } = client;
let scripted: ScriptedServer;
beforeAll(() => {
  ({ scripted } = client);
});

describe('what is retried', () => {
  it.each([
    ['400 (a plain problem)', { status: 400, headers: { 'content-type': 'application/problem+json' }, body: '{"title":"Invalid payment","status":400}' }, 'about:blank'],
    ['422 key-reused', libraryProblem('keyReused'), problemType('keyReused')],
    ['409 response-not-replayable', libraryProblem('notReplayable'), problemType('notReplayable')],
  ])('returns %s at once, problem details parsed and the body still readable', async (_name, step, type) => {
    scripted.script([step, { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), QUICK);
    expect(result.attempts).toBe(1);
    expect(scripted.requests).toHaveLength(1);
    expect(result.stoppedBy).toBe('answer');
    expect(result.problem?.type).toBe(type);
    expect(((await result.response.json()) as { status: number }).status).toBe(result.status);
  });

  it('returns a 500 at once: a bug does not fix itself on a retry', async () => {
    scripted.script([{ status: 500 }, { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), QUICK);
    expect([result.status, result.attempts, result.problem]).toEqual([500, 1, undefined]);
  });

  it('retries 502, 503 and 504 from a gateway, and only the statuses it is told to', async () => {
    scripted.script([notNow(502), notNow(504), notNow(503), { status: 201 }]);
    expect((await idempotentFetch(scripted.url, post(), QUICK)).attempts).toBe(4);
    scripted.script([notNow(502), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, retryStatuses: [503] });
    expect([result.status, result.attempts]).toEqual([502, 1]);
  });

  it('retries an attempt that times out, with the same key', async () => {
    scripted.script(['hang', { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, attemptTimeoutMs: 200 });
    expect([result.status, result.attempts]).toEqual([201, 2]);
    expect(result.history[0]).toMatchObject({ failure: 'timeout', status: undefined });
    expect(result.history[0]!.durationMs).toBeGreaterThanOrEqual(190);
    expect(new Set(keysSent()).size).toBe(1);
  });

  it("follows a problem's boolean retryable member over its status: a retryable 500 is retried, a 503 that is not is returned", async () => {
    const problem = (status: number, retryable: boolean) => ({
      status,
      headers: { 'content-type': 'application/problem+json' },
      body: JSON.stringify({ type: 'urn:example:problem', status, retryable }),
    });
    scripted.script([problem(500, true), { status: 201 }]);
    const retried = await idempotentFetch(scripted.url, post(), QUICK);
    expect([retried.status, retried.attempts]).toEqual([201, 2]);
    expect(new Set(keysSent()).size).toBe(1);
    scripted.script([problem(503, false), { status: 201 }]);
    const returned = await idempotentFetch(scripted.url, post(), QUICK);
    expect([returned.status, returned.attempts, returned.stoppedBy]).toEqual([503, 1, 'answer']);
    // A member that is not a boolean is no answer: the status decides, as for servers that send none.
    scripted.script([{ ...problem(503, true), body: '{"status":503,"retryable":"yes"}' }, { status: 201 }]);
    expect((await idempotentFetch(scripted.url, post(), QUICK)).attempts).toBe(2);
  });

  it('says whether the answer was a replay (Idempotent-Replayed: true)', async () => {
    scripted.script([{ status: 201, headers: { 'idempotent-replayed': 'true' } }]);
    expect((await idempotentFetch(scripted.url, post())).replayed).toBe(true);
    scripted.script([{ status: 201 }]);
    expect((await idempotentFetch(scripted.url, post())).replayed).toBe(false);
  });
});
