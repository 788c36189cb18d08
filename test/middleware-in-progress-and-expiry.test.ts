import { beforeAll, describe, expect, it } from 'vitest';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { postJson } from './helpers/http.js';
import { recordsExpired } from './helpers/record-clock.js';
import { middlewareHarness, newKey } from './helpers/middleware-harness.js';

/** A key while its first request runs (409 with Retry-After) and after its record expired (test/helpers/middleware-harness.ts). */
describe.each(databaseTargets())('idempotency middleware on $name', (target) => {
  const middleware = middlewareHarness(target, 'middleware_expiry');
  const { start } = middleware;
  let db: TestDatabase;
  beforeAll(() => {
    ({ db } = middleware);
  });

  describe('in progress and expiry', () => {
    it('answers 409 with Retry-After: 1 while the first request runs, not its remaining lease (20 s)', async () => {
      let started!: () => void;
      const running = new Promise<void>((resolve) => (started = resolve));
      let finish!: () => void;
      const gate = new Promise<void>((resolve) => (finish = resolve));
      const { url, executions } = await start({ leaseMs: 20_000 }, async (ctx) => {
        started();
        await gate; // runs until the duplicate has had its answer
        ctx.status = 201;
      });
      const key = newKey('slow');
      const first = postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      await running;
      const duplicate = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      finish();
      expect(duplicate.status).toBe(409);
      expect(duplicate.headers.get('retry-after')).toBe('1');
      expect((await first).status).toBe(201);
      expect(executions).toHaveLength(1);
    });

    it('runs a key again, even with another body, once its record has expired', async () => {
      const { url, executions } = await start({ ttlSeconds: 1, leaseMs: 500 }); // the TTL must outlast the lease
      const key = newKey('ttl');
      await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      await recordsExpired(db.sql, `"${db.schema}".idempotency_records`, [key]);
      const later = await postJson(`${url}/orders`, { amount: 6 }, { key, account: 'a' });
      expect(later.status).toBe(201);
      expect(later.headers.get('idempotent-replayed')).toBeNull();
      expect(executions).toHaveLength(2);
    });
  });
});
