import Koa from 'koa';
import type pg from 'pg';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { fromPgPool, PostgresStore, type SqlDatabase, type SqlTransaction } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * The claim transaction's lock timeout is now `SET LOCAL lock_timeout = N` (sent in one text with a Citus
 * setting and the claim mark) instead of set_config(…, true). It must time the handler's statements in
 * transactional mode, and must not outlive the request on the pooled connection.
 */

const target = POSTGRES_SERVER;

describe('transactional lock timeout scope (Postgres server, one-connection pool)', () => {
  let db: TestDatabase;
  let accounts: string;
  beforeAll(async () => {
    db = await target.open('atk_locktime');
    accounts = `"${db.schema}".accounts`;
    await db.sql.query(`CREATE TABLE ${accounts} (id int PRIMARY KEY, balance int NOT NULL)`);
    await db.sql.query(`INSERT INTO ${accounts} VALUES (1, 0)`);
    await db.store(); // migrates
  });
  afterAll(() => db?.close());

  async function appOn(store: PostgresStore, handle: (q: { query: SqlDatabase['query'] }) => Promise<unknown>) {
    const seen: unknown[] = [];
    const koa = new Koa();
    koa.silent = true;
    koa.use(bodyParser());
    koa.use(idempotency({ store, transactional: true }));
    koa.use(async (ctx) => {
      seen.push(await handle(ctx.idempotency!.db!));
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    return { server: await serve(koa), seen };
  }

  it('a handler statement waiting on a row lock fails with 55P03 after lockTimeoutMs; the next request and the pool see the default again', async () => {
    const pool = db.newPool!(1);
    const store = new PostgresStore({ pool, schema: db.schema, lockTimeoutMs: 250, replayCacheEntries: 0 });
    const holder = await db.newPool!(1).connect();
    await holder.query('BEGIN');
    await holder.query(`SELECT * FROM ${accounts} WHERE id = 1 FOR UPDATE`);
    const { server, seen } = await appOn(store, async (q) => {
      const { rows } = await q.query<{ lock_timeout: string }>('SHOW lock_timeout');
      await q.query('SAVEPOINT s');
      const outcome = await q.query(`UPDATE ${accounts} SET balance = balance + 1 WHERE id = 1`).then(
        () => 'updated',
        (error: { code?: string }) => error.code,
      );
      await q.query('ROLLBACK TO SAVEPOINT s');
      return { setting: rows[0]!.lock_timeout, outcome };
    });
    try {
      const first = await postJson(`${server.url}/c`, {}, { key: `lt-${Date.now()}-1` });
      expect(first.status).toBe(201);
      expect(seen[0]).toEqual({ setting: '250ms', outcome: '55P03' });
      // The same (only) connection, outside any claim: the session's own setting, untouched.
      const { rows } = await pool.query<{ lock_timeout: string }>('SHOW lock_timeout');
      expect(rows[0]!.lock_timeout).toBe('0');
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
      await server.close();
      await store.close();
    }
  });

  it("a handler's own SET LOCAL lock_timeout = 0 ends with its request: the next claim on the connection has lockTimeoutMs again", async () => {
    const pool = db.newPool!(1);
    const store = new PostgresStore({ pool, schema: db.schema, lockTimeoutMs: 400, replayCacheEntries: 0 });
    const { server, seen } = await appOn(store, async (q) => {
      const { rows } = await q.query<{ lock_timeout: string }>('SHOW lock_timeout');
      await q.query('SET LOCAL lock_timeout = 0');
      await q.query(`SELECT set_config('lock_timeout', '0', true)`);
      return rows[0]!.lock_timeout;
    });
    try {
      for (let i = 0; i < 3; i++) expect((await postJson(`${server.url}/c`, {}, { key: `lt0-${Date.now()}-${i}` })).status).toBe(201);
      expect(seen).toEqual(['400ms', '400ms', '400ms']);
      const { rows } = await pool.query<{ lock_timeout: string }>('SHOW lock_timeout');
      expect(rows[0]!.lock_timeout).toBe('0');
    } finally {
      await server.close();
      await store.close();
    }
  });

  it('a pool whose connections set lock_timeout themselves (options -c lock_timeout=7s) get it back after every claim, thrown handler included', async () => {
    const pool = db.newPool!(1);
    pool.on('connect', (client) => void client.query('SET lock_timeout = 7000'));
    await pool.query('SELECT 1');
    const store = new PostgresStore({ pool, schema: db.schema, lockTimeoutMs: 900, replayCacheEntries: 0 });
    let n = 0;
    const koa = new Koa();
    koa.silent = true;
    koa.use(idempotency({ store, transactional: true }));
    koa.use(async (ctx) => {
      if (++n === 1) throw new Error('handler failed');
      ctx.status = 201;
    });
    const server = await serve(koa);
    try {
      await postJson(`${server.url}/c`, {}, { key: `ltp-${Date.now()}-1` });
      await postJson(`${server.url}/c`, {}, { key: `ltp-${Date.now()}-2` });
      const { rows } = await pool.query<{ lock_timeout: string }>('SHOW lock_timeout');
      expect(rows[0]!.lock_timeout).toBe('7s');
    } finally {
      await server.close();
      await store.close();
    }
  });

  it('a `database` adapter that sends every statement by the extended protocol (one statement per text, as the SqlDatabase contract reads) still claims in transactional mode', async () => {
    const pool = db.newPool!(2);
    const adapter = extendedOnly(pool);
    const store = new PostgresStore({ database: adapter, schema: db.schema, replayCacheEntries: 0 });
    const { server } = await appOn(store, async (q) => q.query(`UPDATE ${accounts} SET balance = balance + 1 WHERE id = 1`));
    try {
      const response = await postJson(`${server.url}/c`, {}, { key: `ext-${Date.now()}` });
      expect({ status: response.status, body: response.status === 201 ? '' : response.text.slice(0, 300) }).toEqual({ status: 201, body: '' });
    } finally {
      await server.close();
      await store.close();
    }
  });
});

/** A third-party style adapter: node-postgres with queryMode 'extended' for every statement (as a postgres.js or a prepared-statement driver would). */
function extendedOnly(pool: pg.Pool): SqlDatabase {
  const base = fromPgPool(pool);
  const run = (client: pg.Pool | pg.PoolClient, text: string, params?: unknown[]) =>
    client.query({ text, values: params ?? [], queryMode: 'extended' } as pg.QueryConfig) as unknown as Promise<{ rows: never[]; rowCount: number | null }>;
  return {
    query: (text, params) => run(pool, text, params),
    async begin(): Promise<SqlTransaction> {
      const client = await pool.connect();
      await client.query('BEGIN');
      return {
        query: (text, params) => run(client, text, params),
        async commit() {
          try {
            await client.query('COMMIT');
          } finally {
            client.release();
          }
        },
        async rollback() {
          try {
            await client.query('ROLLBACK');
          } finally {
            client.release();
          }
        },
      };
    },
    listen: (channel, onNotify, onReconnect) => base.listen(channel, onNotify, onReconnect),
    queryOnListener: (text, params) => base.queryOnListener!(text, params),
    close: () => base.close(),
  };
}
