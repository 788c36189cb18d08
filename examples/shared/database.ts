import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { fromPgPool, fromPGlite, type SqlDatabase } from '../../src/entries/postgres.js';

/**
 * The examples' database: the Postgres server at DATABASE_URL when set, else an embedded PGlite (in
 * PGLITE_DIR when set, else in memory). `npm start` sets DATABASE_URL to a server of its own when neither is set.
 */
export interface ExampleDatabase {
  kind: 'postgres' | 'pglite';
  /** The adapter handed to the store, also used for the example's own queries. */
  sql: SqlDatabase;
  /** What to give PostgresStore. */
  storeSource: { pool: pg.Pool } | { pglite: PGlite };
  close(): Promise<void>;
}

export async function openExampleDatabase(env: NodeJS.ProcessEnv = process.env): Promise<ExampleDatabase> {
  if (env.DATABASE_URL) {
    const pool = new pg.Pool({
      connectionString: env.DATABASE_URL,
      max: Number(env.PG_POOL_MAX ?? 10),
      // Bounded waits (docs/reliability.md): an exhausted pool or a silent network becomes a 503, never a hang.
      connectionTimeoutMillis: 2_000,
      query_timeout: 5_000,
      statement_timeout: 5_000,
      idle_in_transaction_session_timeout: 60_000,
      keepAlive: true,
    });
    // An idle client whose connection drops (a Postgres restart, a failover) emits 'error'; unheard, it
    // would crash the process. The pool has already discarded the client and opens a new one when needed.
    pool.on('error', (error) => console.warn(`idle Postgres client lost: ${error.message}`));
    return { kind: 'postgres', sql: fromPgPool(pool), storeSource: { pool }, close: () => pool.end() };
  }
  // PGlite creates its own directory, but not the ones above it (PGLITE_DIR=.pglite/payments).
  if (env.PGLITE_DIR) mkdirSync(dirname(resolve(env.PGLITE_DIR)), { recursive: true });
  const pglite = await PGlite.create(env.PGLITE_DIR);
  return { kind: 'pglite', sql: fromPGlite(pglite), storeSource: { pglite }, close: () => pglite.close() };
}
