import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { idempotency } from '../../src/index.js';
import { PostgresStore, type PostgresStoreOptions } from '../../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from './databases.js';
import { serve } from './http.js';

/** A schema of a test's own on the Postgres server: the records table migrated, and a `charges` table. */
export interface ChargesTable {
  schema: string;
  /** The quoted, qualified name of the `charges` table. */
  charges: string;
  /** A pool of the test's own, for setting up and checking (never the store's under test). */
  admin: pg.Pool;
  close(): Promise<void>;
}

export async function openChargesTable(prefix: string, columns = 'key text NOT NULL'): Promise<ChargesTable> {
  const schema = uniqueSchema(prefix);
  const charges = `"${schema}".charges`;
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
  await admin.query(`CREATE SCHEMA "${schema}"`);
  await admin.query(`CREATE TABLE ${charges} (${columns})`);
  const store = new PostgresStore({ pool: admin, schema });
  await store.migrate();
  await store.close();
  return {
    schema,
    charges,
    admin,
    async close() {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    },
  };
}

export interface KeyedResponse {
  /** -1 when no response came (a transport failure, or none within the timeout). */
  status: number;
  type: string | null;
  replayed: string | null;
  text: string;
}

/** POSTs `{"a":1}` under `key`, with `x-mode` for handlers that act on it; never throws (see `status`). */
export async function postKeyed(url: string, key: string, mode = '', timeoutMs = 9_000): Promise<KeyedResponse> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-mode': mode },
      body: '{"a":1}',
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { status: response.status, type: response.headers.get('content-type'), replayed: response.headers.get('idempotent-replayed'), text: await response.text() };
  } catch (error) {
    return { status: -1, type: null, replayed: null, text: String(error) };
  }
}

export interface KeyedApp {
  /** The store's pool, for checking that no client is left checked out or waiting. */
  pool: pg.Pool;
  /** Where postKeyed sends its requests. */
  url: string;
  close(): Promise<void>;
}

export interface KeyedAppOptions {
  transactional: boolean;
  pool?: pg.PoolConfig;
  store?: Partial<PostgresStoreOptions>;
}

/** Serves `handler` behind the middleware (one scope for all), on a pool and a store of its own in `table`'s schema. */
export async function serveKeyedApp(table: ChargesTable, options: KeyedAppOptions, handler: Koa.Middleware): Promise<KeyedApp> {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, ...options.pool });
  // The attacks kill connections: a lost idle client must not end the test process.
  pool.on('error', () => undefined);
  const store = new PostgresStore({ pool, schema: table.schema, replayCacheEntries: 0, ...options.store });
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser());
  app.use(idempotency({ store, transactional: options.transactional, scope: () => 'acct' }));
  app.use(handler);
  const server = await serve(app);
  return {
    pool,
    url: `${server.url}/op`,
    async close() {
      await server.close();
      await store.close();
      await pool.end();
    },
  };
}

/** A handler that writes one charge per execution (in the claim's transaction, in transactional mode) and answers 201. */
export interface ChargingHandler {
  readonly middleware: Koa.Middleware;
  readonly executions: number;
}

export function chargingHandler(table: ChargesTable, transactional: boolean): ChargingHandler {
  let executions = 0;
  return {
    get executions() {
      return executions;
    },
    async middleware(ctx) {
      executions++;
      const key = ctx.idempotency!.key;
      const charge = `INSERT INTO ${table.charges} (key) VALUES ($1)`;
      if (transactional) await ctx.idempotency!.db!.query(charge, [key]);
      else await table.admin.query(charge, [key]);
      ctx.status = 201;
      ctx.body = { key };
    },
  };
}
