import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import type { PostgresStore } from '../src/entries/postgres.js';
import { cli } from './helpers/cli-run.js';
import { cliSchema } from './helpers/cli-schema.js';
import { until } from './helpers/events.js';
import { leaseLapsed } from './helpers/record-clock.js';

/** koa-idempotency stats: the records by status. */
describe('koa-idempotency CLI on the Postgres server', () => {
  const cliDatabase = cliSchema('cli_stats', { migrated: true });
  const { inSchema, claim, records } = cliDatabase;
  let pool: pg.Pool;
  let store: PostgresStore;
  beforeAll(() => {
    ({ pool, store } = cliDatabase);
  });

  describe('stats', () => {
    it('counts records by status, with the oldest in-progress age and the lapsed leases', async () => {
      await claim('stats-running');
      await claim('stats-lapsed', { leaseMs: 1 });
      const done = await claim('stats-done');
      if (done.kind !== 'claimed') throw new Error('expected a fresh claim');
      await store.complete(done.lease, { replayable: false, status: 204 });
      await leaseLapsed(pool, records(), 'stats-lapsed');
      // The oldest in-progress record is at least 20 ms old by Postgres's clock, which stats reads.
      const age = `SELECT now() - created_at >= interval '20 milliseconds' AS old FROM ${records()} WHERE key = 'stats-running'`;
      await until(async () => ((await pool.query<{ old: boolean }>(age)).rows[0]?.old ? true : undefined), 'stats-running 20 ms old');

      const [json, text] = await Promise.all([cli(['stats', ...inSchema, '--json']), cli(['stats', ...inSchema])]);
      expect(json.code).toBe(0);
      expect(json.json.byStatus).toEqual([
        { status: 'in_progress', records: 2, oldestAgeMs: expect.any(Number), lapsedLeases: 1 },
        { status: 'completed', records: 1, oldestAgeMs: expect.any(Number), lapsedLeases: 0 },
      ]);
      expect(json.json).toMatchObject({ totalRecords: 3, lapsedLeases: 1, oldestInProgressAgeMs: expect.any(Number) });
      expect(json.json.oldestInProgressAgeMs).toBeGreaterThanOrEqual(20);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/^status\s+records\s+oldest\s+lapsed leases\nin_progress\s+2\s+\S+ m?s\s+1\ncompleted\s+1\s/);
    });
  });
});
