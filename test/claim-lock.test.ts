import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import type { ClaimRequest } from '../src/index.js';
import type { PostgresStore } from '../src/entries/postgres.js';
import { keyLockExpression } from '../src/store/schema.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';

/**
 * The transactional claim and the key's advisory lock: a duplicate of a completed request is answered
 * from the record even while someone holds the lock for a moment (a waiter that saw "busy" there would
 * have missed the completion's NOTIFY and slept out its waitMs); the lock still stops a second execution.
 * On the Postgres server only: the lock is held from a second session, which PGlite does not have.
 */
const target = POSTGRES_SERVER;
const response = { status: 201, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"ok":true}') };

function request(key: string): ClaimRequest {
  return { scope: 'tenant-a', key, fingerprint: 'fp-1', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 3600 };
}

describe.each([
  { layout: 'a plain table', table: 'lock_plain', partitioning: false as const },
  { layout: 'a table partitioned by time', table: 'lock_partitioned', partitioning: { intervalSeconds: 3600 } },
])(`transactional claim on ${target.name}, $layout, while another session holds the key's lock`, ({ table, partitioning }) => {
  let db: TestDatabase;
  let store: PostgresStore;
  let holder: pg.PoolClient;

  beforeAll(async () => {
    db = await target.open('claim_lock');
    store = await db.store({ table, partitioning, replayCacheEntries: 0 });
    holder = await db.newPool!(1).connect();
  });
  afterAll(async () => {
    holder?.release();
    await db?.close();
  });

  async function withKeyLocked<T>(key: string, run: () => Promise<T>): Promise<T> {
    const lock = keyLockExpression(store.table, '$1', '$2');
    await holder.query(`SELECT pg_advisory_lock(${lock})`, ['tenant-a', key]);
    try {
      return await run();
    } finally {
      await holder.query(`SELECT pg_advisory_unlock(${lock})`, ['tenant-a', key]);
    }
  }

  it('answers a duplicate of a completed request with the record, not busy', async () => {
    const first = await store.claimInTransaction(request('done'));
    if (first.kind !== 'claimed') throw new Error(`expected a claim, got ${first.kind}`);
    await first.commit({ replayable: true, response });

    const duplicate = await withKeyLocked('done', () => store.claimInTransaction(request('done')));
    expect(duplicate.kind).toBe('existing');
    expect(duplicate.kind === 'existing' && duplicate.record.status).toBe('completed');
  });

  it('answers busy for a key with no record: the lock still guards the insert', async () => {
    const claim = await withKeyLocked('fresh', () => store.claimInTransaction(request('fresh')));
    expect(claim.kind).toBe('busy');
  });
});
