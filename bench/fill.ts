import type pg from 'pg';
import { PostgresStore } from '../src/entries/postgres.js';

/**
 * Fills a records table fast: INSERT ... SELECT generate_series with the indexes dropped, then the
 * indexes rebuilt once (far quicker than maintaining them row by row). Keys are random-looking UUIDs
 * (md5 of the row number), as clients send them, so lookups and inserts land all over the index.
 * A fill is kept between runs: the schema's bench_fill table remembers what it holds.
 */
export interface FillSpec {
  schema: string;
  completedRows: number;
  /** Rows whose TTL has run out, for the sweeper. */
  expiredRows: number;
}

/** The key of fill row `n` (1-based), as SQL and as JavaScript compute it alike. */
export const FILL_KEY_SQL = (n: string) => `md5('fill-' || ${n})::uuid::text`;

/**
 * Completed records `from`..`to` (fill keys, a small JSON response each), created and expiring at the given
 * SQL expressions.
 */
export function fillRowsSql(table: string, rows: { from: number; to: number; createdAt: string; expiresAt: string }): string {
  return `INSERT INTO ${table} (scope, key, status, fingerprint, fingerprint_version, fence, attempt, replayable,
    response_status, response_headers, response_body, created_at, completed_at, expires_at)
  SELECT '', ${FILL_KEY_SQL('g')}, 'completed', 'fill', 1, g, 1, true,
    201, '{"content-type":"application/json; charset=utf-8"}'::jsonb, convert_to('{"id":"' || g || '","amount":100}', 'UTF8'),
    ${rows.createdAt}, ${rows.createdAt}, ${rows.expiresAt}
  FROM generate_series(${rows.from}::bigint, ${rows.to}::bigint) g`;
}

export async function ensureFilled(pool: pg.Pool, spec: FillSpec, log: (message: string) => void): Promise<void> {
  const { schema } = spec;
  const marker = `${spec.completedRows}/${spec.expiredRows}`;
  const existing = await pool
    .query<{ spec: string }>(`SELECT spec FROM "${schema}".bench_fill`)
    .then(({ rows }) => rows[0]?.spec)
    .catch(() => undefined);
  if (existing === marker) {
    log(`${schema}: reusing the fill of ${marker} rows`);
    return;
  }
  const started = performance.now();
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  const store = new PostgresStore({ pool, schema });
  await store.migrate();
  await store.close();
  const table = `"${schema}".idempotency_records`;
  const client = await pool.connect();
  try {
    await client.query(`SET synchronous_commit = off; SET maintenance_work_mem = '512MB'`);
    await client.query(`ALTER TABLE ${table} DROP CONSTRAINT idempotency_records_pkey; DROP INDEX "${schema}".idempotency_records_expires_at_idx`);
    const insert = (from: number, to: number, expiresAt: string) => client.query(fillRowsSql(table, { from, to, createdAt: `now() - interval '1 hour'`, expiresAt }));
    const batch = 1_000_000;
    for (let from = 1; from <= spec.completedRows; from += batch) {
      await insert(from, Math.min(spec.completedRows, from + batch - 1), `now() + interval '1 day'`);
      log(`${schema}: ${Math.min(spec.completedRows, from + batch - 1)} rows`);
    }
    if (spec.expiredRows > 0) await insert(spec.completedRows + 1, spec.completedRows + spec.expiredRows, `now() - interval '1 minute'`);
    await client.query(`SELECT setval('"${schema}".idempotency_records_fence_seq', ${spec.completedRows + spec.expiredRows + 1})`);
    await client.query(`ALTER TABLE ${table} ADD PRIMARY KEY (scope, key)`);
    await client.query(`CREATE INDEX idempotency_records_expires_at_idx ON ${table} (expires_at)`);
    await client.query(`VACUUM ANALYZE ${table}`);
    await client.query(`CREATE TABLE "${schema}".bench_fill (spec text NOT NULL); INSERT INTO "${schema}".bench_fill VALUES ('${marker}')`);
  } finally {
    client.release();
  }
  log(`${schema}: filled ${marker} rows in ${Math.round((performance.now() - started) / 1000)} s`);
}
