import pg from 'pg';
import { PostgresStore } from '../src/entries/postgres.js';
import { serverFromEnvironment } from '../examples/shared/postgres-server.js';
import { benchSchemaSql } from './app.js';

/**
 * `npx tsx bench/hot-updates.ts`: how many completions are HOT updates (pg_stat_user_tables.n_tup_hot_upd over
 * n_tup_upd) and what one costs (EXPLAIN (ANALYZE, BUFFERS)), for the store's transactional completion and the
 * hand-written reference's (bench/handwritten.ts), after `REQUESTS` claims and completions of fresh keys each.
 */
const REQUESTS = 2_000;
const postgres = await serverFromEnvironment();
const pool = new pg.Pool({ connectionString: postgres.url, max: 4, pipeline: true });
// pool.end() resolves before its connections have closed: the server stopping next may still end one.
pool.on('error', () => undefined);
const schema = 'hot_updates';
try {
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await pool.query(benchSchemaSql(schema));
  const store = new PostgresStore({ pool, schema, replayCacheEntries: 0 });
  await store.migrate();
  const body = Buffer.from('{"id":"1","amount":100}');
  const request = (key: string) => ({ scope: '', key, fingerprint: 'f', fingerprintVersion: 2, leaseMs: 30_000, ttlSeconds: 86_400 });
  for (let i = 0; i < REQUESTS; i++) {
    const claim = await store.claimInTransaction(request(`k${i}`));
    if (claim.kind !== 'claimed') throw new Error(`key k${i}: ${claim.kind}`);
    await claim.commit({ replayable: true, response: { status: 201, headers: { 'content-type': 'application/json' }, body } });
    const client = await pool.connect();
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${schema}.handwritten_keys (key, fingerprint) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, [`k${i}`, Buffer.alloc(32)]);
    await client.query(`UPDATE ${schema}.handwritten_keys SET response_status = $2, response_body = $3 WHERE key = $1`, [`k${i}`, 201, body]);
    await client.query('COMMIT');
    client.release();
  }
  await store.close();
  // The statistics collector reports with a delay: ask for a snapshot that includes this session's counts.
  await pool.query('SELECT pg_stat_force_next_flush()').catch(() => undefined);
  const { rows } = await pool.query(
    `SELECT relname, n_tup_upd, n_tup_hot_upd, pg_relation_size(relid) AS bytes FROM pg_stat_user_tables WHERE schemaname = $1 AND relname IN ('idempotency_records', 'handwritten_keys') ORDER BY relname`,
    [schema],
  );
  console.table(rows);
  for (const [label, statement] of [
    [
      'store completion (as completeInClaimTransaction, without its mark)',
      `UPDATE ${schema}.idempotency_records SET status = 'completed', completed_at = clock_timestamp(), lease_expires_at = NULL, replayable = true, response_status = 201, response_headers = '{}', response_body = '\\x00', expires_at = clock_timestamp() + interval '1 day' WHERE scope = '' AND key = 'k1000'`,
    ],
    ['hand-written completion', `UPDATE ${schema}.handwritten_keys SET response_status = 201, response_body = '\\x00' WHERE key = 'k1000'`],
  ] as const) {
    const client = await pool.connect();
    await client.query('BEGIN');
    const plan = await client.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${statement}`);
    await client.query('ROLLBACK');
    client.release();
    console.log(`${label}:\n${plan.rows.map((row: Record<string, string>) => `  ${row['QUERY PLAN']}`).join('\n')}`);
  }
} finally {
  await pool.end();
  await postgres.stop();
}
