import { beforeAll, describe, expect, it, vi } from 'vitest';
import { problemType } from '../src/index.js';
import { IdempotentFetchError, idempotentFetch, type AttemptRecord } from '../src/entries/client.js';
import { libraryProblem, notNow, startScriptedServer, type ScriptedServer } from './helpers/scripted-server.js';
import { post, QUICK, scriptedClientEnvironment, UUID } from './helpers/scripted-client.js';

/** How long idempotentFetch waits between attempts (Retry-After, backoff, deadlines) and when it gives up (test/helpers/scripted-client.ts). */

const client = scriptedClientEnvironment();
const { keysSent } = client;
let scripted: ScriptedServer;
beforeAll(() => {
  ({ scripted } = client);
});

describe('waits and limits', () => {
  it('waits what Retry-After says in seconds (up to maxDelayMs), over its own shorter backoff', async () => {
    scripted.script([notNow(503, '1'), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, maxDelayMs: 5_000 });
    const [first, second] = scripted.requests;
    expect(second!.atMs - first!.atMs).toBeGreaterThanOrEqual(990);
    expect(result.history[0]).toMatchObject({ retryAfterMs: 1_000, nextDelayMs: 1_000 });
  });

  it('waits until the HTTP date Retry-After gives', async () => {
    scripted.script([notNow(429, new Date(Date.now() + 2_000).toUTCString()), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, maxDelayMs: 5_000 });
    const [first, second] = scripted.requests;
    // The date has whole seconds: the wait is between one and two seconds.
    expect(second!.atMs - first!.atMs).toBeGreaterThanOrEqual(900);
    expect(result.history[0]!.nextDelayMs).toBeGreaterThan(900);
    expect(result.history[0]!.nextDelayMs).toBeLessThanOrEqual(2_000);
  });

  it('stops after maxAttempts and returns the last "not now" answer with its problem', async () => {
    scripted.script([libraryProblem('storeUnavailable', '0')]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, maxAttempts: 3 });
    expect([result.status, result.attempts, result.stoppedBy]).toEqual([503, 3, 'attempts']);
    expect(result.problem?.type).toBe(problemType('storeUnavailable'));
    expect(result.history.at(-1)!.nextDelayMs).toBeUndefined();
  });

  it('keeps retrying within its deadline when a Retry-After ends past it: the wait is cut to half of what is left', async () => {
    scripted.script([libraryProblem('inProgress', '60'), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { deadlineMs: 2_500 });
    expect([result.status, result.attempts, result.stoppedBy]).toEqual([201, 2, 'answer']);
    expect(result.history[0]!.nextDelayMs).toBeLessThanOrEqual(1_250);
    expect(result.elapsedMs).toBeLessThan(2_500);
  });

  it('caps a long Retry-After at maxDelayMs and retries, instead of stopping on it', async () => {
    scripted.script([libraryProblem('inProgress', '29'), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { maxDelayMs: 300, deadlineMs: 10_000 });
    expect([result.status, result.attempts]).toEqual([201, 2]);
    expect(result.history[0]).toMatchObject({ retryAfterMs: 29_000, nextDelayMs: 300 });
  });

  it('does not come back before a 429 asks: a Retry-After above maxDelayMs is waited in full, one past the deadline stops the call', async () => {
    scripted.script([notNow(429, '1'), { status: 201 }]);
    const waited = await idempotentFetch(scripted.url, post(), { ...QUICK, maxDelayMs: 300 });
    expect(waited.history[0]).toMatchObject({ retryAfterMs: 1_000, nextDelayMs: 1_000 });
    expect(scripted.requests[1]!.atMs - scripted.requests[0]!.atMs).toBeGreaterThanOrEqual(990);

    scripted.script([notNow(429, '30'), { status: 201 }]);
    const stopped = await idempotentFetch(scripted.url, post(), { ...QUICK, deadlineMs: 5_000 });
    expect([stopped.status, stopped.attempts, stopped.stoppedBy]).toEqual([429, 1, 'deadline']);
  });

  it('gives up at the deadline when no attempt gets an answer, with every attempt in the error', async () => {
    scripted.script(['hang']);
    const startedMs = performance.now();
    const error = (await idempotentFetch(scripted.url, post(), { ...QUICK, maxAttempts: 100, attemptTimeoutMs: 300, deadlineMs: 1_000 }).catch(
      (e: unknown) => e,
    )) as IdempotentFetchError;
    expect(error).toBeInstanceOf(IdempotentFetchError);
    expect(error.stoppedBy).toBe('deadline');
    expect(error.attempts).toBeGreaterThanOrEqual(3);
    expect(error.history.every((attempt) => attempt.failure === 'timeout')).toBe(true);
    // Each attempt's timeout is cut to what is left, so the call ends at the deadline (plus timer latency).
    expect(performance.now() - startedMs).toBeLessThan(1_000 + 250);
    expect(new Set(keysSent()).size).toBe(1);
  });

  it('throws IdempotentFetchError after maxAttempts when nothing listens', async () => {
    const closed = await startScriptedServer();
    await closed.close();
    const error = (await idempotentFetch(closed.url, post(), { ...QUICK, maxAttempts: 3 }).catch((e: unknown) => e)) as IdempotentFetchError;
    expect(error).toBeInstanceOf(IdempotentFetchError);
    expect([error.attempts, error.stoppedBy, error.code]).toEqual([3, 'attempts', 'NO_ANSWER']);
    expect(error.history.map((attempt) => attempt.failure)).toEqual(['network-error', 'network-error', 'network-error']);
    expect(error.key).toMatch(UUID);
    expect(error.cause).toBeInstanceOf(TypeError); // fetch's own "fetch failed"
  });
});

describe('backoff timing (fake timers)', () => {
  it('waits exactly the full-jitter delays between attempts: [0, base) then [0, 2 * base), capped', async () => {
    // Only setTimeout is faked: the sockets, the server and performance.now() stay real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      scripted.script([notNow(503), notNow(503), notNow(503), { status: 201 }]);
      // random 0.5: waits of 0.5 * 1000, 0.5 * 2000, then 0.5 * min(4000, 3000).
      const decided: AttemptRecord[] = [];
      const options = { baseDelayMs: 1_000, maxDelayMs: 3_000, random: () => 0.5, onAttempt: (attempt: AttemptRecord) => decided.push(attempt) };
      const call = idempotentFetch(scripted.url, post(), options);
      for (const [index, waitMs] of [500, 1_000, 1_500].entries()) {
        // The wait's timer is set right after the attempt is handed to onAttempt.
        await until(() => decided.length === index + 1);
        await vi.advanceTimersByTimeAsync(waitMs - 1);
        expect(scripted.requests).toHaveLength(index + 1); // not a millisecond early
        await vi.advanceTimersByTimeAsync(1);
      }
      await until(() => scripted.requests.length === 4);
      const result = await call;
      expect(result.history.map((attempt) => attempt.nextDelayMs)).toEqual([500, 1_000, 1_500, undefined]);
    } finally {
      vi.useRealTimers();
    }
  });
});

/** Polls on setImmediate, which the fake timers leave alone, while real I/O happens. */
async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadlineMs = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadlineMs) throw new Error('condition not met in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
}
