import { beforeAll, describe, expect, it, vi } from 'vitest';
import { diag } from '@opentelemetry/api';
import { IdempotencyConfigError } from '../src/index.js';
import { idempotentFetch, type AttemptRecord } from '../src/entries/client.js';
import { notNow, type ScriptedServer } from './helpers/scripted-server.js';
import { post, QUICK, scriptedClientEnvironment } from './helpers/scripted-client.js';

/** idempotentFetch's onAttempt hook and the options it refuses (test/helpers/scripted-client.ts). */

const client = scriptedClientEnvironment();
let scripted: ScriptedServer;
beforeAll(() => {
  ({ scripted } = client);
});

describe('options and hooks', () => {
  it('hands every attempt to onAttempt, and a hook that throws does not break the call', async () => {
    scripted.script([notNow(503, '0'), { status: 201 }]);
    const seen: AttemptRecord[] = [];
    const broken = new Error('a broken hook');
    const reported = vi.spyOn(diag, 'error').mockImplementation(() => undefined);
    try {
      const result = await idempotentFetch(scripted.url, post(), {
        ...QUICK,
        onAttempt: (attempt) => {
          seen.push(attempt);
          throw broken;
        },
      });
      expect(result.status).toBe(201);
      expect(seen).toEqual(result.history);
      expect(seen.map((attempt) => [attempt.attempt, attempt.status, attempt.nextDelayMs])).toEqual([
        [1, 503, 0],
        [2, 201, undefined],
      ]);
      // Reported through diag, as every hook of the library: once per attempt, with the hook's error.
      expect(reported.mock.calls).toEqual([
        ['koa-idempotency: the onAttempt option failed; the call goes on', broken],
        ['koa-idempotency: the onAttempt option failed; the call goes on', broken],
      ]);
    } finally {
      reported.mockRestore();
    }
  });

  it.each([
    [{ maxAttempts: 0 }, 'maxAttempts must be an integer >= 1; got 0'],
    [{ deadlineMs: -1 }, 'deadlineMs must be a number from 1 to 2147483647; got -1'],
    [{ attemptTimeoutMs: Number.NaN }, 'attemptTimeoutMs must be a number from 1 to 2147483647; got NaN'],
    [{ maxDelayMs: 1, baseDelayMs: 10 }, 'maxDelayMs must be a number >= baseDelayMs (10); got 1'],
    [{ retryStatuses: [99] }, 'retryStatuses must be an integer from 100 to 599; got 99'],
    [{ key: '' }, 'key must not be empty'],
    [{ onAttempt: 'log' as never }, 'onAttempt must be a function; got "log"'],
    [{ random: 0.5 as never }, 'random must be a function; got 0.5'],
  ])('refuses %o before sending anything', async (options, message) => {
    scripted.script([{ status: 201 }]);
    const refused = idempotentFetch(scripted.url, post(), options);
    await expect(refused).rejects.toBeInstanceOf(IdempotencyConfigError);
    await expect(refused).rejects.toThrow(message);
    expect(scripted.requests).toHaveLength(0);
  });
});
