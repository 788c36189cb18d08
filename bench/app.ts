import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import type pg from 'pg';
import type { idempotency, SqlQueryable } from '../src/index.js';
import type { PostgresStore } from '../src/entries/postgres.js';
import { handwritten } from './handwritten.js';

/** Which middleware stands in front of the handler. Telemetry is switched on separately (see server.ts). */
export type ServerKind = 'baseline' | 'lease' | 'transactional' | 'naive' | 'handwritten' | 'handwrittenLease';

export const SERVER_KINDS: readonly ServerKind[] = ['baseline', 'lease', 'transactional', 'naive', 'handwritten', 'handwrittenLease'];

/**
 * The business table every scenario writes one row to, the naive check's own records, and the hand-written
 * reference's keys: the narrowest row its guarantee needs (handwritten.ts), with no index beyond the key.
 */
export function benchSchemaSql(schema: string): string {
  return `CREATE SCHEMA IF NOT EXISTS "${schema}";
CREATE TABLE IF NOT EXISTS "${schema}".orders (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  key        text,
  amount     integer     NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS "${schema}".naive_records (
  key             text PRIMARY KEY,
  response_status smallint NOT NULL,
  response_body   text NOT NULL
);
CREATE TABLE IF NOT EXISTS "${schema}".handwritten_keys (
  key             text PRIMARY KEY,
  fingerprint     bytea NOT NULL,
  fence           bigint,
  response_status smallint,
  response_body   bytea,
  created_at      timestamptz NOT NULL DEFAULT now()
)`;
}

/**
 * The benchmarked API: `POST /orders` writes one order row in its own transaction and answers 201.
 * Every scenario runs this same handler; only the middleware in front of it differs. `middleware` is the
 * library's `idempotency`, from the copy the server loaded (library.ts).
 */
export function createBenchApp(kind: ServerKind, pool: pg.Pool, store: PostgresStore, schema: string, middleware: typeof idempotency): Koa {
  const orders = `"${schema}".orders`;
  const app = new Koa();
  app.use(bodyParser({ enableTypes: ['json'] }));
  if (kind === 'lease') app.use(middleware({ store }));
  if (kind === 'transactional') app.use(middleware({ store, transactional: true }));
  if (kind === 'naive') app.use(naiveCheck(pool, schema));
  if (kind === 'handwritten') app.use(handwritten('transactional', pool, schema));
  if (kind === 'handwrittenLease') app.use(handwritten('lease', pool, schema));

  app.use(async (ctx) => {
    if (ctx.method !== 'POST' || ctx.path !== '/orders') return;
    const amount = Number((ctx.request.body as { amount?: unknown } | undefined)?.amount ?? 0);
    const key = ctx.get('Idempotency-Key') || null;
    const insert = `INSERT INTO ${orders} (key, amount) VALUES ($1, $2) RETURNING id::text AS id`;
    // Transactional mode and its hand-written reference: the claim's transaction is open; they commit it.
    const db: SqlQueryable | undefined = ctx.idempotency?.db ?? (ctx.state.transaction as SqlQueryable | undefined);
    const id = db ? await insertWith(db, insert, [key, amount]) : await insertInOwnTransaction(pool, insert, [key, amount]);
    ctx.status = 201;
    ctx.body = { id, amount };
  });
  return app;
}

/** The claim's transaction is already open; the middleware commits it. */
async function insertWith(db: SqlQueryable, text: string, params: unknown[]): Promise<string> {
  const { rows } = await db.query<{ id: string }>(text, params);
  return rows[0]!.id;
}

/** The baseline: BEGIN, INSERT, COMMIT on a pooled client, as a typical handler does. */
async function insertInOwnTransaction(pool: pg.Pool, text: string, params: unknown[]): Promise<string> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ id: string }>(text, params);
    await client.query('COMMIT');
    return rows[0]!.id;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/**
 * The check from the common write-up: SELECT the key; if absent, run the handler, then INSERT the
 * response. Two requests with the same key can both miss the SELECT and both run the handler: the
 * benchmark counts those duplicates.
 */
function naiveCheck(pool: pg.Pool, schema: string): Koa.Middleware {
  const records = `"${schema}".naive_records`;
  return async (ctx, next) => {
    const key = ctx.get('Idempotency-Key');
    if (ctx.method !== 'POST' || !key) {
      await next();
      return;
    }
    const { rows } = await pool.query<{ response_status: number; response_body: string }>(`SELECT response_status, response_body FROM ${records} WHERE key = $1`, [key]);
    if (rows[0]) {
      ctx.status = rows[0].response_status;
      ctx.type = 'application/json';
      ctx.body = rows[0].response_body;
      return;
    }
    await next();
    await pool.query(`INSERT INTO ${records} (key, response_status, response_body) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`, [
      key,
      ctx.status,
      JSON.stringify(ctx.body),
    ]);
  };
}
