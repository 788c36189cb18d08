import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError, type ClaimRequest } from '../src/index.js';
import { type PartitioningOptions, type PostgresStore } from '../src/entries/postgres.js';
import { createTestApp } from './helpers/app.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { until } from './helpers/events.js';
import { postJson, serve } from './helpers/http.js';
import { leaseLapsed, recordsExpired } from './helpers/record-clock.js';

/**
 * The records table partitioned by creation time. The behaviours shared with the plain table run in
 * store.test.ts on both layouts; this file crosses partition boundaries (one-second partitions), drops
 * partitions and checks the maintenance's limits.
 */

const response = { status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"ok":true}') };
const ONE_SECOND: PartitioningOptions = { intervalSeconds: 1, premadePartitions: 5 };

/** `${prefix}-0` to `${prefix}-${count - 1}`: the keys of a batch of claims. */
const keysOf = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}-${i}`);

function request(key: string, overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  return { scope: 'tenant-a', key, fingerprint: 'fp-1', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 3600, ...overrides };
}

describe.each(databaseTargets())('a table partitioned by time on $name', (target) => {
  // PGlite is one connection: a second transaction waits for the first by design. The tests of two at once
  // skip there, saying so in their name.
  const oneConnection = target.name === 'PGlite';
  const twoAtOnce = (name: string) => (oneConnection ? `${name} (skipped on PGlite: one connection, a second transaction waits for the first by design)` : name);
  let db: TestDatabase;
  let tables = 0;

  beforeAll(async () => {
    db = await target.open('partitioning');
  });
  afterAll(() => db?.close());

  /** A migrated partitioned store on a table of its own. */
  async function partitionedStore(options: PartitioningOptions = ONE_SECOND, extra = {}): Promise<{ store: PostgresStore; table: string }> {
    const table = `records_${++tables}`;
    return { store: await db.store({ table, replayCacheEntries: 0, partitioning: options, ...extra }), table };
  }

  /** The whole second Postgres's clock is in: the one-second partition a record claimed now lands in. */
  async function currentSecond(): Promise<number> {
    const { rows } = await db.sql.query<{ second: string }>(`SELECT floor(extract(epoch FROM now()))::text AS second`);
    return Number(rows[0]!.second);
  }

  /** Resolves once Postgres's clock is `seconds` whole seconds on: records claimed then land that many partitions later. */
  async function secondsPass(seconds: number): Promise<void> {
    const from = await currentSecond();
    await until(async () => ((await currentSecond()) >= from + seconds ? true : undefined), `${seconds} s on Postgres's clock`, seconds * 1_000 + 10_000);
  }

  /** The next whole second, so that new records land in the next one-second partition. */
  const nextSecond = () => secondsPass(1);

  /** Waits, by Postgres's clock, until the records of `keys` in `table` have expired (and, with one-second partitions, their partitions have ended). */
  const expired = (table: string, keys: string[]) => recordsExpired(db.sql, `"${db.schema}"."${table}"`, keys);

  async function partitionsOf(table: string): Promise<string[]> {
    const { rows } = await db.sql.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
       WHERE i.inhparent = $1::text::regclass ORDER BY c.relname`,
      [`"${db.schema}"."${table}"`],
    );
    return rows.map((row) => row.name);
  }

  async function rowsOf(table: string, key: string): Promise<Array<{ partition: string; fence: string }>> {
    const { rows } = await db.sql.query<{ partition: string; fence: string }>(
      `SELECT (SELECT relname FROM pg_class WHERE oid = r.tableoid)::text AS partition, fence::text AS fence FROM "${db.schema}"."${table}" r WHERE key = $1`,
      [key],
    );
    return rows;
  }

  describe('migrate()', () => {
    it('creates the catch-all partition, the current one and the premade ones ahead', async () => {
      const { store, table } = await partitionedStore({ intervalSeconds: 3600, premadePartitions: 2 });
      const hour = Math.floor(Date.now() / 3_600_000) * 3600;
      const expected = [`${table}_default`, `${table}_p${hour}`, `${table}_p${hour + 3600}`, `${table}_p${hour + 7200}`].sort();
      // Within a second of an hour boundary the store's clock and ours may disagree about the current hour.
      if (Date.now() % 3_600_000 > 1_000) expect(await partitionsOf(table)).toEqual(expected);
      await store.migrate();
      expect(await partitionsOf(table)).toHaveLength(4);
    });

    it('refuses to treat a plain table as partitioned, and the reverse, instead of failing at the first claim', async () => {
      await db.store({ table: 'plain_records' });
      await expect(db.store({ table: 'plain_records', partitioning: true })).rejects.toThrow(IdempotencyConfigError);
      const { table } = await partitionedStore();
      await expect(db.store({ table })).rejects.toThrow(/partitioned/);
    });

    it('rejects partitioning options that are not whole numbers in range', async () => {
      await expect(db.store({ partitioning: { intervalSeconds: 0 } })).rejects.toThrow(IdempotencyConfigError);
      await expect(db.store({ partitioning: { intervalSeconds: 1.5 } })).rejects.toThrow(IdempotencyConfigError);
      await expect(db.store({ partitioning: { premadePartitions: -1 } })).rejects.toThrow(IdempotencyConfigError);
    });
  });

  describe('claims across partitions', () => {
    it('keeps one record per key when a retry arrives after the partition boundary', async () => {
      const { store, table } = await partitionedStore();
      const first = await store.claim(request('across'));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(first.lease, { replayable: true, response });
      const { partition } = (await rowsOf(table, 'across'))[0]!;
      await nextSecond();

      const retry = await store.claim(request('across'));
      expect(retry.kind).toBe('existing');
      if (retry.kind === 'existing') expect(retry.record.response?.body?.equals(response.body)).toBe(true);
      expect(await rowsOf(table, 'across')).toEqual([{ partition, fence: first.lease.fence }]);
    });

    it('lets exactly one of 200 claims of one key win, in bursts of 25 while two boundaries pass', async () => {
      const { store, table } = await partitionedStore();
      // Eight bursts over ~2 s: the claims start in one partition and go on in the next two.
      const results = await Promise.all(
        Array.from({ length: 8 }, async (_, burst) => {
          // The spread over time is the case: bursts that cross partition boundaries.
          await new Promise((resolve) => setTimeout(resolve, burst * 250));
          return Promise.all(Array.from({ length: 25 }, () => store.claim(request('spread'))));
        }),
      );
      expect(results.flat().filter((result) => result.kind === 'claimed')).toHaveLength(1);
      expect(await rowsOf(table, 'spread')).toHaveLength(1);
    });

    it('moves an expired record into the current partition when the key is claimed afresh', async () => {
      const { store, table } = await partitionedStore();
      const first = await store.claim(request('expired', { ttlSeconds: 1 }));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(first.lease, { replayable: true, response });
      const [before] = await rowsOf(table, 'expired');
      await expired(table, ['expired']);

      const fresh = await store.claim(request('expired', { fingerprint: 'fp-other' }));
      expect(fresh.kind).toBe('claimed');
      if (fresh.kind !== 'claimed') return;
      expect(fresh.record.attempt).toBe(1);
      const after = await rowsOf(table, 'expired');
      expect(after).toHaveLength(1);
      expect(after[0]!.partition).not.toBe(before!.partition);
      // The first owner's late completion finds nothing of its own: its row is gone.
      await expect(store.complete(first.lease, { replayable: true, response })).rejects.toThrow(/no longer owned/);
    });

    it('takes over a lapsed lease in place, keeping the steps and the partition', async () => {
      const { store, table } = await partitionedStore();
      const first = await store.claim(request('lapsed', { leaseMs: 100 }));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.saveStep(first.lease, 'charge', { id: 'ch_1' });
      const [before] = await rowsOf(table, 'lapsed');
      await leaseLapsed(db.sql, `"${db.schema}"."${table}"`, 'lapsed');
      await nextSecond();

      const takeover = await store.claim(request('lapsed'));
      expect(takeover.kind).toBe('claimed');
      if (takeover.kind !== 'claimed') return;
      expect(takeover.record.attempt).toBe(2);
      expect(takeover.record.steps).toEqual({ charge: { id: 'ch_1' } });
      expect((await rowsOf(table, 'lapsed')).map((row) => row.partition)).toEqual([before!.partition]);
    });

    it('turns a transactional duplicate away at once while the first transaction holds the key', async () => {
      const { store } = await partitionedStore();
      const first = await store.claimInTransaction(request('tx'));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      if (!oneConnection) {
        const startedMs = performance.now();
        expect((await store.claimInTransaction(request('tx'))).kind).toBe('busy');
        expect(performance.now() - startedMs).toBeLessThan(1_000);
      }
      await first.commit({ replayable: true, response });
      expect((await store.claimInTransaction(request('tx'))).kind).toBe('existing');
    });

    it('executes one of 30 concurrent identical HTTP requests and replays it to the others', async () => {
      const { store } = await partitionedStore();
      const { app, executions } = createTestApp({ store, options: { onInProgress: 'wait', waitMs: 5_000 } });
      const server = await serve(app);
      try {
        const answers = await Promise.all(Array.from({ length: 30 }, () => postJson(`${server.url}/orders`, { amount: 5 }, { key: 'http-key', account: 'acct-1' })));
        expect(executions).toHaveLength(1);
        expect(answers.map((answer) => `${answer.status} ${answer.status === 201 ? '' : answer.text}`)).toEqual(Array(30).fill('201 '));
        expect(new Set(answers.map((answer) => answer.text)).size).toBe(1);
      } finally {
        await server.close();
      }
    });
  });

  describe('sweep()', () => {
    it('drops a partition once every record in it has expired, and keeps one that holds a live record', async () => {
      const { store, table } = await partitionedStore();
      await nextSecond();
      await store.maintainPartitions();
      for (let i = 0; i < 20; i++) {
        const claim = await store.claim(request(`old-${i}`, { ttlSeconds: 1 }));
        if (claim.kind === 'claimed') await store.complete(claim.lease, { replayable: true, response });
      }
      const expiredPartitions = new Set(await Promise.all(Array.from({ length: 20 }, async (_, i) => (await rowsOf(table, `old-${i}`))[0]!.partition)));
      await nextSecond();
      await store.claim(request('live', { ttlSeconds: 3600 }));
      const [live] = await rowsOf(table, 'live');
      expect(expiredPartitions.has(live!.partition)).toBe(false);
      await expired(table, keysOf('old', 20));

      expect(await store.sweep()).toBe(20);
      const remaining = await partitionsOf(table);
      for (const partition of expiredPartitions) expect(remaining).not.toContain(partition);
      expect(remaining).toContain(live!.partition);
      expect(await store.find('tenant-a', 'old-0')).toBeUndefined();
      expect(await store.find('tenant-a', 'live')).toBeDefined();
      expect(await store.sweep()).toBe(0);
    });

    it('creates partitions ahead as time passes', async () => {
      const { store, table } = await partitionedStore({ intervalSeconds: 1, premadePartitions: 2 });
      await secondsPass(2); // time passes: the partitions made at creation are behind
      // Read before the run: a second that ends during it (a loaded machine) makes it create later ones, never fewer.
      const second = Math.floor(Date.now() / 1_000);
      const report = await store.maintainPartitions();
      expect(report.created.length).toBeGreaterThanOrEqual(2);
      const names = await partitionsOf(table);
      expect(names).toContain(`${table}_p${second + 2}`);
    });

    it('sweeps records that landed in the catch-all partition row by row, and skips a range it already holds', async () => {
      const { store, table } = await partitionedStore({ intervalSeconds: 3600, premadePartitions: 0 });
      const [current] = (await partitionsOf(table)).filter((name) => name !== `${table}_default`);
      await db.sql.query(`DROP TABLE "${db.schema}"."${current}"`);
      for (let i = 0; i < 5; i++) await store.claim(request(`stray-${i}`, { ttlSeconds: 1, leaseMs: 100 }));
      expect(new Set((await rowsOf(table, 'stray-0')).map((row) => row.partition))).toEqual(new Set([`${table}_default`]));

      const report = await store.maintainPartitions();
      expect(report.skipped).toEqual([current]);
      await expired(table, keysOf('stray', 5));
      expect(await store.sweep()).toBe(5);
    });

    it.skipIf(oneConnection)(
      twoAtOnce('lets two instances maintain the same table at once: every run reports, each expired partition is dropped and counted once'),
      async () => {
        const { store, table } = await partitionedStore({ intervalSeconds: 1, premadePartitions: 3 });
        const other = await db.store({ table, replayCacheEntries: 0, partitioning: { intervalSeconds: 1, premadePartitions: 3 } });
        for (let i = 0; i < 10; i++) await store.claim(request(`both-${i}`, { ttlSeconds: 1, leaseMs: 100 }));
        const holding = new Set(await Promise.all(Array.from({ length: 10 }, async (_, i) => (await rowsOf(table, `both-${i}`))[0]!.partition)));
        await expired(table, keysOf('both', 10));
        const [first, second, third, fourth] = await Promise.all([store.maintainPartitions(), other.maintainPartitions(), store.sweepReport(), other.sweepReport()]);
        // What a lock timeout left to the next run is dropped by this one, which runs alone.
        const secondBeforeLast = Math.floor(Date.now() / 1_000);
        const last = await store.sweepReport();
        const reports = [first, second, third.partitions, fourth.partitions, last.partitions];
        expect(reports.every((report) => report !== undefined)).toBe(true);

        // Each expired partition (the ones holding the records, and the empty ones whose range has ended) is
        // dropped once, by one of the five runs, never twice; its records are counted once.
        const dropped = reports.flatMap((report) => report!.dropped);
        expect(new Set(dropped).size).toBe(dropped.length);
        for (const partition of holding) expect(dropped).toContain(partition);
        expect(reports.reduce((sum, report) => sum + report!.droppedRecords, 0)).toBe(10);
        expect(third.deleted + fourth.deleted + last.deleted + first.droppedRecords + second.droppedRecords).toBe(10);
        const remaining = await partitionsOf(table);
        for (const partition of dropped) expect(remaining).not.toContain(partition);
        expect(await store.find('tenant-a', 'both-0')).toBeUndefined();
        // The runs kept creating ahead: the last one made the partition three intervals after its start.
        expect(remaining).toContain(`${table}_p${secondBeforeLast + 3}`);
      },
    );

    it.skipIf(oneConnection)(twoAtOnce('gives up a drop after lockTimeoutMs while a transaction holds the table, and drops it on the next run'), async () => {
      const { store, table } = await partitionedStore({ intervalSeconds: 1, premadePartitions: 3, lockTimeoutMs: 100 });
      await store.claim(request('short', { ttlSeconds: 1, leaseMs: 100 }));
      const [short] = await rowsOf(table, 'short');
      await expired(table, ['short']);
      const holder = await store.claimInTransaction(request('holder'));
      if (holder.kind !== 'claimed') throw new Error('expected a claim');

      const startedMs = performance.now();
      const blocked = await store.maintainPartitions();
      expect(performance.now() - startedMs).toBeLessThan(1_500);
      expect(blocked.dropped).toEqual([]);
      expect(blocked.skipped).toContain(short!.partition);
      await holder.rollback();

      const report = await store.maintainPartitions();
      expect(report.dropped).toContain(short!.partition);
      expect(report.droppedRecords).toBe(1);
      expect(await partitionsOf(table)).not.toContain(short!.partition);
    });
  });
});
