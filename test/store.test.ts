import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CompletionRolledBackError, FencedError, IdempotencyConfigError, type ClaimRequest } from '../src/index.js';
import { migrationSql, PostgresStore } from '../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { leaseLapsed, recordsExpired } from './helpers/record-clock.js';

function request(key: string, overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  return { scope: 'tenant-a', key, fingerprint: 'fp-1', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 3600, ...overrides };
}

const response = { status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"ok":true}') };

describe('schema', () => {
  it('ships sql/schema.sql equal to the migration of the default table', () => {
    expect(readFileSync(new URL('../sql/schema.sql', import.meta.url), 'utf8')).toBe(migrationSql());
  });

  it('ships sql/schema-partitioned.sql equal to the migration of the default table partitioned by time', () => {
    expect(readFileSync(new URL('../sql/schema-partitioned.sql', import.meta.url), 'utf8')).toBe(migrationSql({ partitioning: true }));
  });

  it.each(['records; DROP TABLE x', 'Records', '1records', 'a"b', '', 'x'.repeat(49)])('refuses the table name %j', (table) => {
    expect(() => new PostgresStore({ database: {} as never, table })).toThrow(IdempotencyConfigError);
  });

  it('refuses an injected schema name', () => {
    expect(() => new PostgresStore({ database: {} as never, schema: 'public"; DROP SCHEMA x; --' })).toThrow(IdempotencyConfigError);
  });
});

/**
 * Every behaviour holds for the plain table and for the table partitioned by time, whose uniqueness of
 * (scope, key) is kept by the claim function rather than by a constraint. An hourly interval keeps all
 * of a test's records in one partition; partitioning.test.ts crosses partition boundaries.
 */
const layouts = [
  { layout: 'a plain table', partitioning: false },
  { layout: 'a table partitioned by time', partitioning: { intervalSeconds: 3600 } },
];

describe.each(databaseTargets().flatMap((target) => layouts.map((layout) => ({ ...target, ...layout }))))('PostgresStore on $name, $layout', (target) => {
  let db: TestDatabase;
  let store: PostgresStore;

  beforeAll(async () => {
    db = await target.open('store');
    store = await db.store({ replayCacheEntries: 0, partitioning: target.partitioning });
  });
  afterAll(() => db?.close());

  /** Waits, by Postgres's clock, for the lease of `key`'s record to run out. */
  const lapsed = (key: string) => leaseLapsed(db.sql, `"${db.schema}".idempotency_records`, key);

  describe('claim()', () => {
    it('claims a new key and reports the first attempt', async () => {
      const result = await store.claim(request('new-key'));
      expect(result.kind).toBe('claimed');
      if (result.kind !== 'claimed') return;
      expect(result.record.attempt).toBe(1);
      expect(result.record.status).toBe('in_progress');
      expect(result.lease.fence).toMatch(/^\d+$/);
    });

    it('returns the in-progress record with its remaining lease to a second claim', async () => {
      await store.claim(request('busy-key', { leaseMs: 20_000 }));
      const second = await store.claim(request('busy-key'));
      expect(second.kind).toBe('existing');
      if (second.kind !== 'existing') return;
      expect(second.record.status).toBe('in_progress');
      expect(second.record.leaseRemainingMs).toBeGreaterThan(15_000);
      expect(second.record.leaseRemainingMs).toBeLessThanOrEqual(20_000);
    });

    it('returns the completed record, response included, after complete()', async () => {
      const first = await store.claim(request('done-key'));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(first.lease, { replayable: true, response });
      const again = await store.claim(request('done-key'));
      expect(again.kind).toBe('existing');
      if (again.kind !== 'existing') return;
      expect(again.record.status).toBe('completed');
      expect(again.record.response?.status).toBe(201);
      expect(again.record.response?.headers).toEqual({ 'content-type': 'application/json' });
      expect(again.record.response?.body?.equals(response.body)).toBe(true);
    });

    it('answers duplicates by reading only: no row version written, the fence unchanged', async () => {
      const first = await store.claim(request('read-only'));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(first.lease, { replayable: true, response });
      const row = async () =>
        (await db.sql.query<{ xmin: string; fence: string }>(`SELECT xmin::text, fence::text FROM "${db.schema}".idempotency_records WHERE key = 'read-only'`)).rows[0]!;
      const before = await row();
      expect(before.fence).toBe(first.lease.fence);
      for (let i = 0; i < 10; i++) expect((await store.claim(request('read-only'))).kind).toBe('existing');
      expect(await row()).toEqual(before);
    });

    it('keeps the same key in two scopes as two independent records', async () => {
      const a = await store.claim(request('shared-key', { scope: 'tenant-a' }));
      const b = await store.claim(request('shared-key', { scope: 'tenant-b' }));
      expect(a.kind).toBe('claimed');
      expect(b.kind).toBe('claimed');
    });

    it('lets exactly one of 50 concurrent claims of one key win', async () => {
      const results = await Promise.all(Array.from({ length: 50 }, () => store.claim(request('race-key'))));
      expect(results.filter((r) => r.kind === 'claimed')).toHaveLength(1);
      expect(results.filter((r) => r.kind === 'existing')).toHaveLength(49);
    });

    it('lets a retry take over once the lease has lapsed, with a new fence and attempt 2', async () => {
      const first = await store.claim(request('lapsed-key', { leaseMs: 200 }));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      expect((await store.claim(request('lapsed-key'))).kind).toBe('existing');
      await lapsed('lapsed-key');
      const takeover = await store.claim(request('lapsed-key'));
      expect(takeover.kind).toBe('claimed');
      if (takeover.kind !== 'claimed') return;
      expect(takeover.record.attempt).toBe(2);
      expect(BigInt(takeover.lease.fence)).toBeGreaterThan(BigInt(first.lease.fence));
    });

    it('never lets a different request take over a lapsed lease', async () => {
      await store.claim(request('lapsed-mismatch', { leaseMs: 100 }));
      await lapsed('lapsed-mismatch');
      const other = await store.claim(request('lapsed-mismatch', { fingerprint: 'fp-2' }));
      expect(other.kind).toBe('existing');
    });

    it('treats an expired record as absent and starts afresh', async () => {
      const first = await store.claim(request('expiring', { ttlSeconds: 1 }));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(first.lease, { replayable: true, response });
      await recordsExpired(db.sql, `"${db.schema}".idempotency_records`, ['expiring']);
      const fresh = await store.claim(request('expiring', { fingerprint: 'fp-other' }));
      expect(fresh.kind).toBe('claimed');
      if (fresh.kind !== 'claimed') return;
      expect(fresh.record.attempt).toBe(1);
      expect(fresh.record.steps).toEqual({});
    });
  });

  describe('fencing', () => {
    it('refuses the late completion of a worker whose record was taken over, and changes nothing', async () => {
      const zombie = await store.claim(request('zombie', { leaseMs: 100 }));
      if (zombie.kind !== 'claimed') throw new Error('expected a claim');
      await lapsed('zombie');
      const taker = await store.claim(request('zombie'));
      if (taker.kind !== 'claimed') throw new Error('expected a takeover');

      await expect(store.complete(zombie.lease, { replayable: true, response })).rejects.toBeInstanceOf(FencedError);
      await expect(store.saveStep(zombie.lease, 'charge', { id: 'x' })).rejects.toBeInstanceOf(FencedError);
      expect(await store.renewLease(zombie.lease, 10_000)).toBe(false);
      await store.release(zombie.lease);

      const record = await store.find('tenant-a', 'zombie');
      expect(record?.status).toBe('in_progress');
      expect(record?.fence).toBe(taker.lease.fence);
      expect(record?.steps).toEqual({});
    });

    it('accepts a repeated completion from the same owner (its first answer may have been lost)', async () => {
      const owner = await store.claim(request('completed-twice'));
      if (owner.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(owner.lease, { replayable: true, response });
      await store.complete(owner.lease, { replayable: true, response });
      expect((await store.find('tenant-a', 'completed-twice'))?.status).toBe('completed');
    });

    it('renews the lease of the owner', async () => {
      const owner = await store.claim(request('renewed', { leaseMs: 300 }));
      if (owner.kind !== 'claimed') throw new Error('expected a claim');
      expect(await store.renewLease(owner.lease, 5_000)).toBe(true);
      const record = await store.find('tenant-a', 'renewed');
      expect(record!.leaseRemainingMs).toBeGreaterThan(4_000);
    });
  });

  describe('release()', () => {
    it('deletes the owned record so the next claim runs afresh', async () => {
      const first = await store.claim(request('released'));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.release(first.lease);
      expect(await store.find('tenant-a', 'released')).toBeUndefined();
      expect((await store.claim(request('released'))).kind).toBe('claimed');
    });
  });

  describe('steps', () => {
    it('keeps completed steps across a takeover', async () => {
      const first = await store.claim(request('stepped', { leaseMs: 100 }));
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.saveStep(first.lease, 'charge', { chargeId: 'ch_1' });
      await lapsed('stepped');
      const takeover = await store.claim(request('stepped'));
      if (takeover.kind !== 'claimed') throw new Error('expected a takeover');
      expect(takeover.record.steps).toEqual({ charge: { chargeId: 'ch_1' } });
    });
  });

  describe('claimInTransaction()', () => {
    it('commits the record together with the business write', async () => {
      await db.sql.query(`CREATE TABLE IF NOT EXISTS "${db.schema}".ledger (id text PRIMARY KEY)`);
      const claim = await store.claimInTransaction(request('tx-commit'));
      if (claim.kind !== 'claimed') throw new Error('expected a claim');
      await claim.db.query(`INSERT INTO "${db.schema}".ledger (id) VALUES ('tx-commit')`);
      await claim.commit({ replayable: true, response });
      expect((await store.find('tenant-a', 'tx-commit'))?.status).toBe('completed');
      expect((await db.sql.query(`SELECT 1 FROM "${db.schema}".ledger WHERE id = 'tx-commit'`)).rows).toHaveLength(1);
    });

    it('commits nothing when the completion finds no record of its own (it fails instead of committing)', async () => {
      await db.sql.query(`CREATE TABLE IF NOT EXISTS "${db.schema}".ledger (id text PRIMARY KEY)`);
      const claim = await store.claimInTransaction(request('tx-fenced'));
      if (claim.kind !== 'claimed') throw new Error('expected a claim');
      await claim.db.query(`INSERT INTO "${db.schema}".ledger (id) VALUES ('tx-fenced')`);
      // Something inside the transaction removed the record: the completion and COMMIT go out together.
      await claim.db.query(`DELETE FROM "${db.schema}".idempotency_records WHERE key = 'tx-fenced'`);
      // Rolled back before COMMIT, so a known outcome: the fencing is the cause.
      const failure = claim.commit({ replayable: true, response });
      await expect(failure).rejects.toBeInstanceOf(CompletionRolledBackError);
      await expect(failure).rejects.toMatchObject({ cause: expect.any(FencedError) });
      expect((await db.sql.query(`SELECT 1 FROM "${db.schema}".ledger WHERE id = 'tx-fenced'`)).rows).toHaveLength(0);
      expect((await store.claim(request('tx-fenced'))).kind).toBe('claimed');
    });

    it('rolls back the record together with the business write', async () => {
      await db.sql.query(`CREATE TABLE IF NOT EXISTS "${db.schema}".ledger (id text PRIMARY KEY)`);
      const claim = await store.claimInTransaction(request('tx-rollback'));
      if (claim.kind !== 'claimed') throw new Error('expected a claim');
      await claim.db.query(`INSERT INTO "${db.schema}".ledger (id) VALUES ('tx-rollback')`);
      await claim.rollback();
      expect(await store.find('tenant-a', 'tx-rollback')).toBeUndefined();
      expect((await db.sql.query(`SELECT 1 FROM "${db.schema}".ledger WHERE id = 'tx-rollback'`)).rows).toHaveLength(0);
    });
  });
});

/**
 * sweep() of the plain table, on its own tables, so once per database rather than once per layout: a
 * partitioned table drops partitions instead (partitioning.test.ts).
 */
describe.each(databaseTargets())('PostgresStore on $name, a plain table', (target) => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await target.open('store_sweep');
  });
  afterAll(() => db?.close());

  describe('sweep()', () => {
    it('deletes expired records in bounded batches and keeps live ones', async () => {
      const sweeper = await db.store({ table: 'sweep_records' });
      for (let i = 0; i < 25; i++) {
        const claim = await sweeper.claim(request(`old-${i}`, { ttlSeconds: 1 }));
        if (claim.kind === 'claimed') await sweeper.complete(claim.lease, { replayable: true, response });
      }
      await sweeper.claim(request('live', { ttlSeconds: 3600 }));
      await recordsExpired(
        db.sql,
        `"${db.schema}".sweep_records`,
        Array.from({ length: 25 }, (_, i) => `old-${i}`),
      );
      expect(await sweeper.sweep({ batchSize: 10, maxBatches: 1 })).toBe(10);
      expect(await sweeper.sweep({ batchSize: 10 })).toBe(15);
      expect(await sweeper.find('tenant-a', 'live')).toBeDefined();
      expect((await sweeper.stats()).map((s) => [s.status, s.records])).toEqual([['in_progress', 1]]);
    });

    it('pauses between batches, so a large backlog does not crowd out claims', async () => {
      const sweeper = await db.store({ table: 'paced_sweep_records' });
      for (let i = 0; i < 12; i++) await sweeper.claim(request(`paced-${i}`, { ttlSeconds: 1, leaseMs: 100 }));
      await recordsExpired(db.sql, `"${db.schema}".paced_sweep_records`);
      const startedMs = performance.now();
      expect(await sweeper.sweep({ batchSize: 5, pauseMs: 150 })).toBe(12);
      // Three batches (5, 5, 2): two pauses.
      expect(performance.now() - startedMs).toBeGreaterThanOrEqual(300);
    });
  });
});
