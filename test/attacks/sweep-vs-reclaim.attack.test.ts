import Koa from 'koa';
import type pg from 'pg';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { fromPgPool, PostgresStore, type SqlDatabase } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * The sweep must never delete a live or just re-claimed record. Two sweeps are attacked: the usual one (FOR
 * UPDATE SKIP LOCKED), and the one without row locks the store falls back to once the database refuses FOR
 * UPDATE with 0A000 (Citus). The fallback is forced on plain Postgres by a `database` adapter that answers
 * 0A000 to any text with SKIP LOCKED, as Citus would. The race: an expired record re-claimed in transactional
 * mode (the ON CONFLICT update uncommitted for the whole handler) while a sweep runs.
 */

const target = POSTGRES_SERVER;

function refusingRowLocks(pool: pg.Pool): SqlDatabase & { refused: () => number } {
  const base = fromPgPool(pool);
  let refused = 0;
  return {
    query: (text, params) => {
      if (/SKIP LOCKED/.test(text)) {
        refused++;
        return Promise.reject(Object.assign(new Error('could not run distributed query with FOR UPDATE/SHARE commands'), { code: '0A000' }));
      }
      return base.query(text, params);
    },
    begin: () => base.begin(),
    listen: (channel, onNotify, onReconnect) => base.listen(channel, onNotify, onReconnect),
    queryOnListener: (text, params) => base.queryOnListener!(text, params),
    close: () => base.close(),
    refused: () => refused,
  };
}

describe('sweep racing a transactional re-claim of an expired record (Postgres server)', () => {
  let db: TestDatabase;
  let records: string;
  let charges: string;
  let counter = 0;
  const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

  beforeAll(async () => {
    db = await target.open('atk_sweep');
    records = `"${db.schema}".idempotency_records`;
    charges = `"${db.schema}".charges`;
    await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
    await db.store(); // migrates
  });
  afterAll(() => db?.close());

  async function waitFor<T>(what: string, read: () => Promise<T | undefined>): Promise<T> {
    for (let i = 0; i < 400; i++) {
      const value = await read();
      if (value !== undefined) return value;
      await new Promise((resolve) => setImmediate(resolve));
    }
    throw new Error(`never observed: ${what}`);
  }

  for (const locks of ['row locks (SKIP LOCKED)', 'no row locks (0A000 fallback)'] as const) {
    it(`with ${locks}: a record re-claimed while the sweep runs is not deleted, its response replays, the charge happens once`, async () => {
      const pool = db.newPool!(4);
      const refusing = locks.startsWith('no') ? refusingRowLocks(pool) : undefined;
      const adapter = refusing ?? fromPgPool(pool);
      const store = new PostgresStore({ database: adapter, schema: db.schema, replayCacheEntries: 0 });
      let executions = 0;
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const koa = new Koa();
      koa.silent = true;
      koa.use(bodyParser());
      koa.use(idempotency({ store, transactional: true }));
      koa.use(async (ctx) => {
        executions++;
        await ctx.idempotency!.db!.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [ctx.idempotency!.key]);
        if (executions === 2) {
          entered();
          await gate;
        }
        ctx.status = 201;
        ctx.body = { execution: executions };
      });
      const server = await serve(koa);
      const key = newKey('sweep');
      try {
        // A first execution, completed; then its TTL runs out (expires_at moved into the past, as time would).
        expect((await postJson(`${server.url}/c`, { n: 1 }, { key })).status).toBe(201);
        await db.sql.query(`UPDATE ${records} SET expires_at = now() - interval '1 second' WHERE key = $1`, [key]);
        await db.sql.query(`DELETE FROM ${charges} WHERE key = $1`, [key]); // the expired operation is forgotten

        // The key used afresh: the re-claim takes the expired row over and holds it, uncommitted, in the handler.
        const second = postJson(`${server.url}/c`, { n: 2 }, { key });
        await inHandler;
        const sweep = store.sweep({ pauseMs: 0 });
        let sweepDone = false;
        void sweep.then(
          () => (sweepDone = true),
          () => (sweepDone = true),
        );
        // Let the sweep reach the row: either it is done (skipped the locked row) or it waits on the row lock.
        await waitFor('the sweep done or waiting for a lock', async () => {
          if (sweepDone) return true;
          const { rows } = await db.sql.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%doomed%' AND query LIKE $1`,
            [`%${db.schema}%`],
          );
          return Number(rows[0]!.n) > 0 ? true : undefined;
        });
        open();
        expect((await second).status).toBe(201);
        const deleted = await sweep;
        const { rows } = await db.sql.query<{ status: string }>(`SELECT status FROM ${records} WHERE key = $1`, [key]);
        const retry = await postJson(`${server.url}/c`, { n: 2 }, { key });
        expect({
          deleted,
          record: rows[0]?.status,
          retry: retry.status,
          replayed: retry.headers.get('idempotent-replayed'),
          executions,
          charges: await rowsWithKey(db.sql, charges, key),
        }).toEqual({ deleted: 0, record: 'completed', retry: 201, replayed: 'true', executions: 2, charges: 1 });
        if (refusing) expect(refusing.refused()).toBeGreaterThan(0);
      } finally {
        open();
        await server.close();
        await store.close();
      }
    });
  }

  it('no row locks (0A000 fallback): a completed, unexpired record and a live lease past its TTL are never swept; an expired one is', async () => {
    const pool = db.newPool!(2);
    const adapter = refusingRowLocks(pool);
    const store = new PostgresStore({ database: adapter, schema: db.schema, replayCacheEntries: 0 });
    try {
      const live = newKey('live');
      const expired = newKey('expired');
      const leased = newKey('leased');
      const base = { fingerprint: 'f', fingerprintVersion: 1 };
      void base;
      await db.sql.query(
        `INSERT INTO ${records} (scope, key, status, fingerprint, fingerprint_version, fence, expires_at, lease_expires_at) VALUES
          ('s', $1, 'completed', 'f', 1, 1, now() + interval '1 hour', NULL),
          ('s', $2, 'completed', 'f', 1, 1, now() - interval '1 second', NULL),
          ('s', $3, 'in_progress', 'f', 1, 1, now() - interval '1 second', now() + interval '1 hour')`,
        [live, expired, leased],
      );
      await store.sweep({ pauseMs: 0 });
      const { rows } = await db.sql.query<{ key: string }>(`SELECT key FROM ${records} WHERE key = ANY($1) ORDER BY key`, [[live, expired, leased]]);
      expect(rows.map((r) => r.key).sort()).toEqual([leased, live].sort());
      expect(adapter.refused()).toBeGreaterThan(0);
    } finally {
      await store.close();
    }
  });
});
