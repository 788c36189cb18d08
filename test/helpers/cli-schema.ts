import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { FINGERPRINT_VERSION, type ClaimRequest } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { cli } from './cli-run.js';
import { DATABASE_URL, uniqueSchema } from './databases.js';
import { recordsExpired } from './record-clock.js';

/**
 * The schema a CLI test file runs the commands on (test/cli-*.test.ts), in the describe block that calls it:
 * named after `prefix`, with a pool and a store on it for the test's own records; `migrated` runs
 * `koa-idempotency migrate` on it first. `pool` and `store` are set once the block's beforeAll has run.
 */
export function cliSchema(prefix: string, options: { migrated?: boolean } = {}) {
  const schema = uniqueSchema(prefix);
  const inSchema = ['--schema', schema];
  let pool: pg.Pool;
  let store: PostgresStore;

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 5 });
    store = new PostgresStore({ pool, schema, replayCacheEntries: 0 });
    if (options.migrated) {
      const migrate = await cli(['migrate', ...inSchema]);
      if (migrate.code !== 0) throw new Error(`koa-idempotency migrate failed: ${migrate.stderr}`);
    }
  });
  afterAll(async () => {
    await store?.close();
    await pool?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool?.end();
  });

  const claim = (key: string, overrides: Partial<ClaimRequest> = {}) =>
    store.claim({ scope: 'cli', key, fingerprint: 'fp', fingerprintVersion: FINGERPRINT_VERSION, leaseMs: 30_000, ttlSeconds: 3600, ...overrides });

  /** Records that expire at once: claimed and completed with a TTL of one millisecond. */
  async function expiredRecords(prefix: string, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const result = await claim(`${prefix}-${i}`, { ttlSeconds: 0.001 });
      if (result.kind !== 'claimed') throw new Error('expected a fresh claim');
      await store.complete(result.lease, { replayable: false, status: 204 });
    }
    await recordsExpired(
      pool,
      records(),
      Array.from({ length: count }, (_, i) => `${prefix}-${i}`),
    );
  }

  /** The records table the CLI reads, schema-qualified. */
  const records = () => `"${schema}".idempotency_records`;

  return {
    schema,
    inSchema,
    get pool() {
      return pool;
    },
    get store() {
      return store;
    },
    claim,
    expiredRecords,
    records,
  };
}
