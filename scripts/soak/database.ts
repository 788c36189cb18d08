import pg from 'pg';
import { fromPgPool, type SqlDatabase } from '../../src/entries/postgres.js';
import { startTcpProxy, type TcpProxy } from '../../test/helpers/tcp-proxy.js';
import type { SoakOptions } from './types.js';

/** The soak's database: the app's pool with bounded waits (through a TCP proxy under `--chaos`), and a direct one. */
export interface SoakDatabase {
  /** The app's adapter (through the proxy under chaos). */
  sql: SqlDatabase;
  /** Direct access for set-up and audit. */
  admin: SqlDatabase;
  storeSource: { pool: pg.Pool };
  pool: pg.Pool;
  proxy?: TcpProxy;
  close(): Promise<void>;
}

export async function openDatabase(options: SoakOptions, schema: string): Promise<SoakDatabase> {
  const adminPool = new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  // An idle connection's error (the server shutting down at exit, a chaos restart) is not the soak's failure.
  adminPool.on('error', () => undefined);
  await adminPool.query(`CREATE SCHEMA "${schema}"`);
  const target = new URL(options.databaseUrl);
  const proxy = options.chaos ? await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) }) : undefined;
  // The bounded waits docs/reliability.md recommends: no request waits forever for a connection or a statement.
  const pool = new pg.Pool({
    connectionString: proxy ? proxy.urlFor(options.databaseUrl) : options.databaseUrl,
    max: 10,
    connectionTimeoutMillis: 2_000,
    query_timeout: 5_000,
    application_name: 'koa-idempotency-soak',
  });
  pool.on('error', () => undefined);
  return {
    sql: fromPgPool(pool),
    admin: fromPgPool(adminPool),
    storeSource: { pool },
    pool,
    proxy,
    async close() {
      await pool.end();
      await proxy?.close();
      await adminPool.end();
    },
  };
}
