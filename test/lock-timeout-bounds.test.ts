import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError } from '../src/index.js';
import { PostgresStore, type SqlDatabase } from '../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';

/**
 * Postgres' lock_timeout is an int of milliseconds: 2147483647 at most. A larger lockTimeoutMs used to be
 * accepted, after which SET failed in every claim transaction (each transactional request answered 503), and
 * a larger partitioning.lockTimeoutMs failed every partition step. Both are refused when the store is created.
 */

const LARGEST_LOCK_TIMEOUT_MS = 2_147_483_647;
/** Enough for the constructor; never queried. */
const database = {} as SqlDatabase;

describe('lock timeouts refused when the store is created', () => {
  it.each([LARGEST_LOCK_TIMEOUT_MS + 1, 1e12, LARGEST_LOCK_TIMEOUT_MS + 0.6])(
    'refuses a lockTimeoutMs of %d, above the largest lock_timeout Postgres accepts',
    (lockTimeoutMs) => {
      expect(() => new PostgresStore({ database, lockTimeoutMs })).toThrow(IdempotencyConfigError);
      expect(() => new PostgresStore({ database, lockTimeoutMs })).toThrow(/lockTimeoutMs must be .*2147483647/);
    },
  );

  it('refuses a partitioning.lockTimeoutMs above the largest lock_timeout Postgres accepts', () => {
    expect(() => new PostgresStore({ database, partitioning: { lockTimeoutMs: LARGEST_LOCK_TIMEOUT_MS + 1 } })).toThrow(
      /partitioning\.lockTimeoutMs must be .*2147483647/,
    );
  });
});

describe.each(databaseTargets())('the largest lock timeouts on $name', (target) => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await target.open('lock_timeout_bounds');
  });
  afterAll(() => db?.close());

  it('claims and commits in a transaction with lockTimeoutMs 2147483647', async () => {
    const store = await db.store({ table: 'largest_claim', lockTimeoutMs: LARGEST_LOCK_TIMEOUT_MS });
    const claim = await store.claimInTransaction({ scope: 's', key: 'largest', fingerprint: 'f', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 60 });
    expect(claim.kind).toBe('claimed');
    if (claim.kind === 'claimed') await claim.commit({ replayable: false, status: 201 });
    expect(await store.find('s', 'largest')).toMatchObject({ status: 'completed' });
  });

  it('creates the partitions ahead with partitioning.lockTimeoutMs 2147483647', async () => {
    const store = await db.store({ table: 'largest_partitions', partitioning: { intervalSeconds: 3600, premadePartitions: 1, lockTimeoutMs: LARGEST_LOCK_TIMEOUT_MS } });
    const report = await store.maintainPartitions();
    expect(report.skipped).toEqual([]);
  });
});
