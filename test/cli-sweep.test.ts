import { beforeAll, describe, expect, it } from 'vitest';
import type { PostgresStore } from '../src/entries/postgres.js';
import { cli } from './helpers/cli-run.js';
import { cliSchema } from './helpers/cli-schema.js';

/** koa-idempotency sweep: expired records deleted in batches. */
describe('koa-idempotency CLI on the Postgres server', () => {
  const cliDatabase = cliSchema('cli_sweep', { migrated: true });
  const { inSchema, claim, expiredRecords } = cliDatabase;
  let store: PostgresStore;
  beforeAll(() => {
    ({ store } = cliDatabase);
  });
  // A record that has not expired, which every sweep must keep.
  beforeAll(async () => {
    await claim('stats-running');
  });

  describe('sweep', () => {
    it('deletes every expired record, batch after batch, and keeps the others', async () => {
      await expiredRecords('sweep-all', 3);
      const before = await store.stats();
      const run = await cli(['sweep', ...inSchema, '--batch-size', '2', '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({ deleted: 3, durationMs: expect.any(Number) });
      const after = await store.stats();
      const total = (stats: typeof before) => stats.reduce((sum, row) => sum + row.records, 0);
      expect(total(before) - total(after)).toBe(3);
      expect(await store.find('cli', 'stats-running')).toBeDefined();
    });

    it('stops after --max-batches', async () => {
      await expiredRecords('sweep-bounded', 3);
      const run = await cli(['sweep', ...inSchema, '--batch-size', '1', '--max-batches', '2']);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^deleted 2 expired records in \d+ ms\n$/);
      const rest = await cli(['sweep', ...inSchema, '--json']);
      expect(rest.json.deleted).toBe(1);
    });
  });
});
