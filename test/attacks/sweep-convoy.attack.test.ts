import Koa from 'koa';
import type pg from 'pg';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { fromPgPool, PostgresStore, type SqlDatabase } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Liveness of the sweep without row locks (the fallback once FOR UPDATE is refused with 0A000, forced here on
 * plain Postgres by an adapter that answers 0A000 to SKIP LOCKED, as Citus would). Without SKIP LOCKED the
 * sweep's DELETE waits for a record a long transactional handler re-claimed; whatever it deleted before in the
 * same batch stays locked meanwhile, so a plain claim of another expired key waits for that handler.
 * Guarantee checked: a sweep never makes an unrelated key's claim wait for another key's handler.
 */

const target = POSTGRES_SERVER;

function refusingRowLocks(pool: pg.Pool): SqlDatabase {
  const base = fromPgPool(pool);
  return {
    query: (text, params) =>
      /SKIP LOCKED/.test(text)
        ? Promise.reject(Object.assign(new Error('could not run distributed query with FOR UPDATE/SHARE commands'), { code: '0A000' }))
        : base.query(text, params),
    begin: () => base.begin(),
    listen: (channel, onNotify, onReconnect) => base.listen(channel, onNotify, onReconnect),
    queryOnListener: (text, params) => base.queryOnListener!(text, params),
    close: () => base.close(),
  };
}

describe('sweep convoy behind a long transactional handler (Postgres server)', () => {
  let db: TestDatabase;
  let records: string;
  let counter = 0;
  const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

  beforeAll(async () => {
    db = await target.open('atk_convoy');
    records = `"${db.schema}".idempotency_records`;
    await db.store();
  });
  afterAll(() => db?.close());

  for (const locks of ['row locks (SKIP LOCKED)', 'no row locks (0A000 fallback)'] as const) {
    it(`with ${locks}: while a handler holds a re-claimed expired key, another expired key's new request answers`, async () => {
      const pool = db.newPool!(6);
      const adapter = locks.startsWith('no') ? refusingRowLocks(pool) : fromPgPool(pool);
      const store = new PostgresStore({ database: adapter, schema: db.schema, replayCacheEntries: 0 });
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const held = newKey('held');
      const other = newKey('other');
      const koa = new Koa();
      koa.silent = true;
      koa.use(bodyParser());
      koa.use(async (ctx, next) => {
        const transactional = ctx.get('idempotency-key') === held;
        return idempotency({ store, transactional })(ctx, next);
      });
      koa.use(async (ctx) => {
        if (ctx.get('idempotency-key') === held && ctx.get('x-hold') === '1') {
          entered();
          await gate;
        }
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const server = await serve(koa);
      let sweep: Promise<number> | undefined;
      try {
        for (const key of [other, held]) expect((await postJson(`${server.url}/c`, {}, { key })).status).toBe(201);
        // Both expired; `other` earlier, so the sweep reaches it first.
        await db.sql.query(`UPDATE ${records} SET expires_at = now() - interval '2 seconds' WHERE key = $1`, [other]);
        await db.sql.query(`UPDATE ${records} SET expires_at = now() - interval '1 second' WHERE key = $1`, [held]);
        const holding = postJson(`${server.url}/c`, {}, { key: held, headers: { 'x-hold': '1' } });
        await inHandler;
        sweep = store.sweep({ pauseMs: 0 });
        let sweepDone = false;
        void sweep.then(
          () => (sweepDone = true),
          () => (sweepDone = true),
        );
        for (let i = 0; i < 400 && !sweepDone; i++) {
          const { rows } = await db.sql.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%doomed%' AND query LIKE $1`,
            [`%${db.schema}%`],
          );
          if (Number(rows[0]!.n) > 0) break;
          await new Promise((resolve) => setImmediate(resolve));
        }
        const answer = await Promise.race([
          postJson(`${server.url}/c`, { again: true }, { key: other }).then((r) => r.status),
          new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5_000).unref()),
        ]);
        expect(answer).toBe(201);
        open();
        expect((await holding).status).toBe(201);
      } finally {
        open();
        await sweep?.catch(() => undefined);
        await server.close();
        await store.close();
      }
    });
  }
});
