import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * The completion now stamps completed_at and expires_at with statement_timestamp() instead of clock_timestamp().
 * In transactional mode the completion runs inside the claim's (long) transaction, on a pooled connection where
 * it is a named prepared statement (Bind/Execute only after its first use). The TTL must still count from the
 * completion: completed_at no earlier than anything the handler did, expires_at exactly ttlSeconds later.
 */

for (const target of databaseTargets()) {
  describe(`completion time stamps on ${target.name}`, () => {
    let db: TestDatabase;
    let records: string;
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    beforeAll(async () => {
      db = await target.open('atk_clock');
      records = `"${db.schema}".idempotency_records`;
    });
    afterAll(() => db?.close());

    async function oneConnectionStore(): Promise<PostgresStore> {
      if (db.kind === 'pglite') return db.store({ replayCacheEntries: 0 });
      const store = new PostgresStore({ pool: db.newPool!(1), schema: db.schema, replayCacheEntries: 0 });
      await store.migrate();
      return store;
    }

    for (const transactional of [true, false]) {
      it(`${transactional ? 'transactional' : 'lease'} mode: completed_at is after the handler's last statement and expires_at is completed_at + ttlSeconds (3 requests on one connection)`, async () => {
        const store = await oneConnectionStore();
        const handlerClock: Record<string, string> = {};
        const koa = new Koa();
        koa.silent = true;
        koa.use(bodyParser());
        koa.use(idempotency({ store, transactional, ttlSeconds: 3600 }));
        koa.use(async (ctx) => {
          const q = transactional ? ctx.idempotency!.db! : db.sql;
          // Some work inside the transaction, then the handler's own reading of the wall clock.
          for (let i = 0; i < 5; i++) await q.query('SELECT $1::int + 1 AS n', [i]);
          const { rows } = await q.query<{ t: string }>('SELECT clock_timestamp()::text AS t');
          handlerClock[ctx.idempotency!.key] = rows[0]!.t;
          ctx.status = 201;
          ctx.body = { ok: true };
        });
        const server = await serve(koa);
        try {
          const keys = [newKey('clk'), newKey('clk'), newKey('clk')];
          for (const key of keys) expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
          const results = [];
          for (const key of keys) {
            const { rows } = await db.sql.query<{ after_handler: boolean; ttl: number }>(
              `SELECT completed_at >= $2::timestamptz AS after_handler, extract(epoch FROM expires_at - completed_at)::float8 AS ttl FROM ${records} WHERE key = $1`,
              [key, handlerClock[key]],
            );
            results.push({ afterHandler: rows[0]!.after_handler, ttl: Number(rows[0]!.ttl) });
          }
          expect(results).toEqual(keys.map(() => ({ afterHandler: true, ttl: 3600 })));
        } finally {
          await server.close();
          await store.close();
        }
      });
    }
  });
}
