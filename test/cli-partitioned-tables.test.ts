import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { FINGERPRINT_VERSION, type ClaimRequest } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { cli } from './helpers/cli-run.js';
import { cliSchema } from './helpers/cli-schema.js';
import { recordsExpired } from './helpers/record-clock.js';

/** The commands on partitioned tables: migrate --partitioned, stats and inspect, partition sweeps. */
describe('koa-idempotency CLI on the Postgres server', () => {
  const cliDatabase = cliSchema('cli_partitioned', { migrated: true });
  const { schema, inSchema } = cliDatabase;
  let pool: pg.Pool;
  beforeAll(() => {
    ({ pool } = cliDatabase);
  });

  describe('partitioned tables', () => {
    const inTable = (table: string) => [...inSchema, '--table', table];

    async function relkind(table: string): Promise<string | null> {
      const { rows } = await pool.query(`SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)) AS relkind`, [`"${schema}"."${table}"`]);
      return rows[0].relkind;
    }

    async function partitionsOf(table: string): Promise<string[]> {
      const { rows } = await pool.query<{ name: string }>(
        `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass ORDER BY c.relname`,
        [`"${schema}"."${table}"`],
      );
      return rows.map((row) => row.name);
    }

    /** Start epoch seconds of the time partitions, in order. */
    async function startsOf(table: string): Promise<number[]> {
      const pattern = new RegExp(`^${table}_p(\\d+)$`);
      return (await partitionsOf(table)).flatMap((name) => (pattern.exec(name) ? [Number(pattern.exec(name)![1])] : [])).sort((a, b) => a - b);
    }

    /** A store on a partitioned table of the test schema, as the application would build it. */
    function partitionedStore(table: string, intervalSeconds: number): PostgresStore {
      return new PostgresStore({ pool, schema, table, replayCacheEntries: 0, partitioning: { intervalSeconds } });
    }

    const request = (key: string, overrides: Partial<ClaimRequest> = {}): ClaimRequest => ({
      scope: 'cli',
      key,
      fingerprint: 'fp',
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: 30_000,
      ttlSeconds: 3600,
      ...overrides,
    });

    it('migrate --partitioned creates a partitioned table with its catch-all partition, the current one and those ahead', async () => {
      const run = await cli(['migrate', ...inTable('hourly'), '--partitioned', '--partition-interval-seconds', '3600', '--premade-partitions', '2', '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({
        migrated: true,
        schema,
        table: 'hourly',
        partitioned: true,
        partitionIntervalSeconds: 3600,
        premadePartitions: 2,
        defaultPartition: 'hourly_default',
      });
      expect(await relkind('hourly')).toBe('p');
      const { rows } = await pool.query(
        `SELECT count(*)::int AS n FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace WHERE s.nspname = $1 AND p.proname = 'hourly_claim'`,
        [schema],
      );
      expect(rows[0].n).toBe(1);
      const hour = Math.floor(Date.now() / 3_600_000) * 3600;
      const expected = [`hourly_p${hour}`, `hourly_p${hour + 3600}`, `hourly_p${hour + 7200}`];
      // Within a second of an hour boundary the server's clock and ours may disagree about the current hour.
      if (Date.now() % 3_600_000 > 5_000) {
        expect(run.json.partitions).toEqual(expected);
        expect(await partitionsOf('hourly')).toEqual(['hourly_default', ...expected].sort());
      }

      // Run again without the interval: the table's own is kept, no partition of a day (the default) appears.
      const again = await cli(['migrate', ...inTable('hourly'), '--partitioned']);
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(/^partitioned by created_at: \d+ partitions of 3600 s up to \S+Z, and the catch-all "hourly_default"$/m);
      const starts = await startsOf('hourly');
      expect(starts.length).toBeGreaterThanOrEqual(3);
      for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBe(3600);
    });

    it('stats and inspect work on a partitioned table without being told', async () => {
      const store = partitionedStore('hourly', 3600);
      try {
        await store.claim(request('p-running'));
        const done = await store.claim(request('p-done'));
        if (done.kind !== 'claimed') throw new Error('expected a fresh claim');
        await store.complete(done.lease, { replayable: false, status: 204 });

        const [stats, inspect] = await Promise.all([
          cli(['stats', ...inTable('hourly'), '--json']),
          cli(['inspect', ...inTable('hourly'), '--scope', 'cli', '--key', 'p-done', '--json']),
        ]);
        expect(stats.code).toBe(0);
        expect(stats.json).toMatchObject({ totalRecords: 2, lapsedLeases: 0, oldestInProgressAgeMs: expect.any(Number) });
        expect(stats.json.byStatus.map((row: { status: string; records: number }) => [row.status, row.records])).toEqual([
          ['in_progress', 1],
          ['completed', 1],
        ]);
        expect(inspect.code).toBe(0);
        expect(inspect.json).toMatchObject({ key: 'p-done', status: 'completed', attempt: 1 });
      } finally {
        await store.close();
      }
    });

    it('refuses to migrate a partitioned table without --partitioned, and a plain one with it (exit 2)', async () => {
      expect((await cli(['migrate', ...inTable('layout_partitioned'), '--partitioned'])).code).toBe(0);
      const plain = await cli(['migrate', ...inTable('layout_partitioned'), '--json']);
      expect(plain.code).toBe(2);
      expect(plain.json.error).toEqual({
        code: 'layout_mismatch',
        message: `the table "${schema}"."layout_partitioned" is partitioned: run \`koa-idempotency migrate --partitioned\` to keep it up to date (a table is never converted; to switch to a plain table, migrate a new --table)`,
      });

      expect((await cli(['migrate', ...inTable('layout_plain')])).code).toBe(0);
      const partitioned = await cli(['migrate', ...inTable('layout_plain'), '--partitioned']);
      expect(partitioned.code).toBe(2);
      expect(partitioned.stderr).toMatch(/the table "\S+"\."layout_plain" exists and is not partitioned: `migrate --partitioned` never converts a table/);
      expect(partitioned.stdout).toBe('');
      expect([await relkind('layout_partitioned'), await relkind('layout_plain')]).toEqual(['p', 'r']);
    });

    it('refuses the partitioning flags of sweep on a plain table (exit 2)', async () => {
      expect((await cli(['migrate', ...inTable('sweep_plain')])).code).toBe(0);
      const run = await cli(['sweep', ...inTable('sweep_plain'), '--partition-interval-seconds', '60', '--json']);
      expect(run.code).toBe(2);
      expect(run.json.error).toEqual({ code: 'usage', message: expect.stringContaining('is not partitioned') });
    });

    it('sweep drops the partitions whose records all expired, taking the interval from the table', async () => {
      const migrated = await cli(['migrate', ...inTable('secondly'), '--partitioned', '--partition-interval-seconds', '1', '--premade-partitions', '5']);
      expect(migrated.code).toBe(0);
      const store = partitionedStore('secondly', 1);
      let expired: string[];
      try {
        for (let i = 0; i < 5; i++) {
          const result = await store.claim(request(`short-${i}`, { ttlSeconds: 1 }));
          if (result.kind !== 'claimed') throw new Error('expected a fresh claim');
          await store.complete(result.lease, { replayable: false, status: 204 });
        }
        const { rows } = await pool.query<{ partition: string }>(
          `SELECT DISTINCT (SELECT relname FROM pg_class WHERE oid = r.tableoid)::text AS partition FROM "${schema}".secondly r`,
        );
        expired = rows.map((row) => row.partition);
      } finally {
        await store.close();
      }
      expect(expired.length).toBeGreaterThan(0);
      expect(expired.every((name) => /^secondly_p\d+$/.test(name))).toBe(true);
      await recordsExpired(pool, `"${schema}".secondly`); // and with them their one-second partitions have ended

      const run = await cli(['sweep', ...inTable('secondly'), '--json']);
      expect(run.code).toBe(0);
      expect(run.json).toMatchObject({
        deleted: 5,
        partitions: { intervalSeconds: 1, droppedRecords: 5, skipped: [] },
        durationMs: expect.any(Number),
      });
      for (const partition of expired) expect(run.json.partitions.dropped).toContain(partition);
      const remaining = await partitionsOf('secondly');
      for (const partition of expired) expect(remaining).not.toContain(partition);
      expect(remaining).toContain('secondly_default');
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".secondly`);
      expect(rows[0].n).toBe(0);

      // More partitions ahead than migrate made; the human output reports the maintenance after the count.
      const ahead = await cli(['sweep', ...inTable('secondly'), '--premade-partitions', '8']);
      expect(ahead.code).toBe(0);
      expect(ahead.stdout).toMatch(/^deleted 0 expired records in \d+ ms\npartitions of 1 s: [1-9]\d* created, \d+ dropped \(0 records\), 0 skipped\n$/);
      const starts = await startsOf('secondly');
      expect(starts.at(-1)! - Math.floor(Date.now() / 1_000)).toBeGreaterThanOrEqual(6);
      for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBe(1);
    });
  });
});
