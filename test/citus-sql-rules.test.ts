import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimedOf, newRequest, sampleResponse } from '../src/conformance/fixtures.js';
import { fromPgPool, PostgresStore } from '../src/entries/postgres.js';
import { storePrimitives } from '../src/store/primitives/store-primitives.js';
import { catalogVolatility, citusGate, citusViolations, type VolatilityOf } from './helpers/citus-rules.js';
import { DATABASE_URL, uniqueSchema } from './helpers/databases.js';

/**
 * Every statement the store sends is one a table distributed by Citus accepts (issue 24, docs/scale-out.md),
 * checked in CI without Citus: the store runs through all its operations on the real Postgres server behind
 * a gate that refuses, as Citus does (0A000), any statement breaking a rule of citus-rules.ts, and records it.
 * The one statement refused on purpose is the sweep's FOR UPDATE SKIP LOCKED, which the store then replaces.
 */

const layouts = [
  { layout: 'a plain table', partitioning: undefined },
  { layout: 'a table partitioned by time', partitioning: { intervalSeconds: 3600 } },
];

let pool: pg.Pool;
let volatility: VolatilityOf;
const schemas: string[] = [];

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: DATABASE_URL, max: 6 });
  volatility = await catalogVolatility(fromPgPool(pool));
});

afterAll(async () => {
  for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

describe('the rules of a Citus-distributed table', () => {
  it('refuses clock_timestamp() in an UPDATE, and accepts statement_timestamp() there', () => {
    const update = 'WITH done AS (UPDATE t SET completed_at = clock_timestamp() WHERE scope = $1 AND key = $2 RETURNING 1) SELECT 1 FROM done';
    expect(citusViolations(update, volatility)).toEqual(['VOLATILE function in an UPDATE or DELETE: clock_timestamp']);
    expect(citusViolations(update.replace('clock_timestamp', 'statement_timestamp'), volatility)).toEqual([]);
  });

  it('refuses now() in ON CONFLICT DO UPDATE, a count without RETURNING, and a NOTIFY over a write that runs on the worker', () => {
    expect(citusViolations('INSERT INTO t VALUES ($1) ON CONFLICT (k) DO UPDATE SET at = now() WHERE t.at <= now() RETURNING 1', volatility)).toEqual([
      'non-IMMUTABLE function in ON CONFLICT DO UPDATE SET/WHERE: now',
    ]);
    expect(citusViolations('INSERT INTO t VALUES ($1) ON CONFLICT (k) DO NOTHING', volatility)).toHaveLength(1);
    expect(citusViolations('WITH gone AS (DELETE FROM t WHERE scope = $1 AND key = $2 RETURNING 1) SELECT pg_notify($3, $4) FROM gone', volatility)).toHaveLength(1);
    expect(citusViolations("SELECT set_config('lock_timeout', '1000', true)", volatility)).toHaveLength(1);
  });
});

describe.each(layouts)('PostgresStore on $layout behind a gate with the rules of Citus', ({ partitioning }) => {
  it('sends only statements a distributed table accepts, through every operation, and sweeps without row locks when they are refused', async () => {
    const schema = uniqueSchema('citus_rules');
    schemas.push(schema);
    const { db, sent } = citusGate(fromPgPool(pool), volatility);
    const store = new PostgresStore({ database: db, schema, partitioning, replayCacheEntries: 0 });
    try {
      await store.migrate();
      // Lease mode: a new key, the same key again (the full claim), a step, a renewal, the completion, a replay.
      const request = newRequest();
      const lease = claimedOf(await store.claim(request), 'a new key').lease;
      expect((await store.claim(request)).kind).toBe('existing');
      await store.saveStep(lease, 'charge', { id: 1 });
      expect(await store.renewLease(lease, 30_000)).toBe(true);
      const watch = await store.watch(request.scope, request.key);
      await store.complete(lease, { replayable: true, response: sampleResponse() });
      expect(await watch.next(2_000)).toBe('changed');
      watch.close();
      expect((await store.find(request.scope, request.key))?.status).toBe('completed');
      // A released key, and an operator's forget.
      const released = newRequest();
      await store.release(claimedOf(await store.claim(released), 'a key to release').lease);
      expect((await store.forget(request.scope, request.key)).kind).toBe('forgotten');
      // Transactional mode: a commit with its completion, a duplicate, and a rollback (which wakes waiters).
      const committed = newRequest();
      await claimedOf(await store.claimInTransaction(committed), 'a transactional claim').commit({ replayable: true, response: sampleResponse() });
      expect((await store.claimInTransaction(committed)).kind).toBe('existing');
      await claimedOf(await store.claimInTransaction(newRequest()), 'a claim rolled back').rollback();
      expect(await store.sweep()).toBeGreaterThanOrEqual(0);
      await store.stats();
    } finally {
      await store.close();
    }

    const refused = [...sent].filter(([, violations]) => violations.length > 0);
    expect(refused.map(([text, violations]) => ({ sweep: /FOR UPDATE SKIP LOCKED/.test(text) && /count\(\*\)::int AS deleted/.test(text), violations }))).toEqual(
      refused.map(() => ({ sweep: true, violations: ['FOR UPDATE/SHARE over more than one key: refused across shards'] })),
    );
    // Every statement of the store went through the gate: a new one cannot escape the rules by not being run here.
    const primitives = Object.entries(
      storePrimitives({ table: { schema, table: 'idempotency_records' }, partitioned: partitioning !== undefined, notify: 'whenWaited' }),
    );
    expect(primitives.filter(([, primitive]) => primitive !== undefined && !sent.has(primitive.text)).map(([name]) => name)).toEqual([]);
  });
});
