import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotentFetch } from '../src/entries/client.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { waiterApp } from './helpers/waiter-harness.js';
import { signal } from './helpers/events.js';

/**
 * Both ends of a 409 in progress, end to end: the server advertises a short Retry-After (not the owner's
 * remaining lease), and idempotentFetch keeps retrying within its deadline with capped waits, so a call
 * whose first attempt timed out still gets the operation's answer when it completes moments later.
 */

describe('a client retrying a key still in progress (Postgres server)', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('in_progress_retry');
  });
  afterAll(() => db?.close());

  it('gets the replay of an operation that completes after its first attempt timed out, instead of the 409', async () => {
    const store = await db.store({ replayCacheEntries: 0 });
    const finish = signal();
    let completedAtMs = 0;
    const server = await waiterApp({ store, leaseMs: 30_000 }, async (_ctx, execution) => {
      if (execution > 1) throw new Error('executed twice');
      await finish.promise;
      completedAtMs = performance.now();
    });
    try {
      const startedMs = performance.now();
      const call = idempotentFetch(
        server.url,
        { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' },
        { key: `slow-${Date.now()}`, attemptTimeoutMs: 300, deadlineMs: 10_000, onAttempt: (attempt) => attempt.status === 409 && finish.fire() },
      );
      const result = await call;
      const inProgress = result.history.find((attempt) => attempt.status === 409);
      console.info(
        `[retry] 409 Retry-After ${inProgress?.retryAfterMs} ms; answer ${result.status} after ${Math.round(result.elapsedMs)} ms, the operation completed at ${Math.round(completedAtMs - startedMs)} ms`,
      );
      expect(result.history[0]!.failure).toBe('timeout');
      expect(inProgress?.retryAfterMs).toBe(1_000);
      expect([result.status, result.replayed, result.stoppedBy]).toEqual([201, true, 'answer']);
    } finally {
      finish.fire();
      await server.close();
    }
  });
});
