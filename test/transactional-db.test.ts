import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { eq } from 'drizzle-orm';
import { integer, pgSchema, text } from 'drizzle-orm/pg-core';
import { drizzle, type PgRemoteDatabase } from 'drizzle-orm/pg-proxy';
import { Kysely, PostgresDialect, type PostgresPool } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, TransactionControlError, type TransactionalDb } from '../src/index.js';
import { type PostgresStore } from '../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';

/**
 * `ctx.idempotency.db` in transactional mode is a capability over the claim's transaction, not the
 * transaction nor its connection: `query()` runs in the transaction; `commit()`, `rollback()` and `release()`
 * are refused with a TransactionControlError; a reference kept past the request is revoked. A real query
 * builder (Kysely with its Postgres dialect) runs on it through the adapter the README shows.
 */

interface ChargesTable {
  key: string;
  amount: number;
}

/** The README's adapter: Kysely's Postgres dialect over the capability, whose release() is its own no-op. */
function kyselyOn<Database>(db: TransactionalDb): Kysely<Database> {
  const client = { query: (text: string, params: readonly unknown[]) => db.query(text, [...params]), release: () => undefined };
  const pool = { options: {}, connect: async () => client, end: async () => undefined };
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool: pool as unknown as PostgresPool }) });
}

/** The README's Drizzle set-up: its pg-proxy driver, rows of a select as arrays in column order. */
function drizzleOn(db: TransactionalDb): PgRemoteDatabase {
  return drizzle(async (sql, params, method) => {
    const { rows } = await db.query(sql, params);
    return { rows: method === 'all' ? rows.map((row) => Object.values(row)) : rows };
  });
}

describe.each(databaseTargets({ pipelined: true }))('ctx.idempotency.db, a capability over the claim transaction, on $name', (target) => {
  let db: TestDatabase;
  let store: PostgresStore;
  let charges: string;

  beforeAll(async () => {
    db = await target.open('tx_capability');
    charges = `"${db.schema}".charges`;
    await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
    store = await db.store({ replayCacheEntries: 0 });
  });
  afterAll(() => db?.close());

  const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);

  /** A transactional app whose handler is `handle(db, key)`; it answers 201 unless the handler throws. */
  async function app(handle: (db: TransactionalDb, key: string) => Promise<void>) {
    let executions = 0;
    const koa = new Koa();
    koa.silent = true;
    koa.use(bodyParser());
    koa.use(idempotency({ store, transactional: true }));
    koa.use(async (ctx) => {
      executions++;
      await handle(ctx.idempotency!.db!, ctx.idempotency!.key);
      ctx.status = 201;
      ctx.body = { charged: true };
    });
    return { server: await serve(koa), executions: () => executions };
  }

  const insertCharge = (tx: TransactionalDb, key: string) => tx.query(`INSERT INTO ${charges} (key, amount) VALUES ($1, 1)`, [key]);

  describe.each(['commit', 'rollback', 'release'] as const)('db.%s()', (method) => {
    it(`is refused with a TransactionControlError: the request fails, nothing of it is committed, and its retry charges once`, async () => {
      const key = `refused-${method}`;
      const refusals: unknown[] = [];
      let refuse = true;
      const { server, executions } = await app(async (tx, chargeKey) => {
        await insertCharge(tx, chargeKey);
        if (!refuse) return;
        try {
          (tx as unknown as Record<typeof method, () => unknown>)[method]();
        } catch (error) {
          refusals.push(error);
          throw error;
        }
      });
      try {
        expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key })).status).toBe(500);
        expect(refusals).toHaveLength(1);
        expect(refusals[0]).toBeInstanceOf(TransactionControlError);
        expect((refusals[0] as Error).message).toContain(`ctx.idempotency.db.${method}() is refused`);
        expect(await chargesOf(key)).toBe(0);
        expect(await store.find('', key)).toBeUndefined();

        refuse = false;
        expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key })).status).toBe(201);
        expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key })).status).toBe(201);
        expect([executions(), await chargesOf(key)]).toEqual([2, 1]);
      } finally {
        await server.close();
      }
    });
  });

  it('offers no connection: the capability has query() and the refused methods, no client to escape with', async () => {
    let seen: TransactionalDb | undefined;
    const { server } = await app(async (tx) => {
      seen = tx;
    });
    try {
      expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'no-client' })).status).toBe(201);
      expect(Object.keys(seen!).sort()).toEqual(['commit', 'query', 'release', 'rollback']);
      expect((seen as unknown as { client?: unknown }).client).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it('rejects every call of a db kept past its request, saying that the claim ended, and writes nothing with it', async () => {
    let kept: TransactionalDb | undefined;
    const { server } = await app(async (tx, key) => {
      kept = tx;
      await insertCharge(tx, key);
    });
    try {
      expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'kept' })).status).toBe(201);
      const late = kept!.query(`INSERT INTO ${charges} (key, amount) VALUES ($1, 1)`, ['kept-late']);
      await expect(late).rejects.toBeInstanceOf(TransactionControlError);
      await expect(late).rejects.toThrow("used after the idempotency claim's transaction ended at its commit");
      expect([await chargesOf('kept'), await chargesOf('kept-late')]).toEqual([1, 0]);
    } finally {
      await server.close();
    }
  });

  it('revokes the db of a request whose handler failed: its claim ended at the rollback', async () => {
    let kept: TransactionalDb | undefined;
    const { server } = await app(async (tx) => {
      kept = tx;
      throw new Error('the handler fails');
    });
    try {
      expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'kept-rolled-back' })).status).toBe(500);
      await expect(kept!.query('SELECT 1')).rejects.toThrow("used after the idempotency claim's transaction ended at its rollback");
    } finally {
      await server.close();
    }
  });

  describe('with Drizzle (its pg-proxy driver) on the capability', () => {
    it('commits the row Drizzle inserted with the stored response, and reads it back through Drizzle in a later request', async () => {
      const chargesTable = () => pgSchema(db.schema).table('charges', { key: text('key').notNull(), amount: integer('amount').notNull() });
      const read: unknown[] = [];
      const { server } = await app(async (tx, key) => {
        const orm = drizzleOn(tx);
        if (key === 'drizzle') await orm.insert(chargesTable()).values({ key, amount: 3 });
        else read.push(...(await orm.select().from(chargesTable()).where(eq(chargesTable().key, 'drizzle'))));
      });
      try {
        expect((await postJson(`${server.url}/charge`, { amount: 3 }, { key: 'drizzle' })).status).toBe(201);
        expect((await postJson(`${server.url}/charge`, { amount: 3 }, { key: 'drizzle' })).headers.get('idempotent-replayed')).toBe('true');
        expect(await chargesOf('drizzle')).toBe(1);
        expect((await postJson(`${server.url}/charge`, {}, { key: 'drizzle-reader' })).status).toBe(201);
        expect(read).toEqual([{ key: 'drizzle', amount: 3 }]);
      } finally {
        await server.close();
      }
    });
  });

  describe('with Kysely (its Postgres dialect) on the capability', () => {
    it('commits the rows Kysely wrote with the stored response, and the replay writes none', async () => {
      const { server, executions } = await app(async (tx, key) => {
        await kyselyOn<{ charges: ChargesTable }>(tx).withSchema(db.schema).insertInto('charges').values({ key, amount: 7 }).execute();
      });
      try {
        const first = await postJson(`${server.url}/charge`, { amount: 7 }, { key: 'kysely' });
        const replay = await postJson(`${server.url}/charge`, { amount: 7 }, { key: 'kysely' });
        expect([first.status, replay.status, replay.headers.get('idempotent-replayed')]).toEqual([201, 201, 'true']);
        expect([executions(), await chargesOf('kysely')]).toEqual([1, 1]);
        const { rows } = await db.sql.query<{ amount: number }>(`SELECT amount FROM ${charges} WHERE key = $1`, ['kysely']);
        expect(rows).toEqual([{ amount: 7 }]);
      } finally {
        await server.close();
      }
    });

    it('rolls back what Kysely wrote when the handler fails after it', async () => {
      const { server } = await app(async (tx, key) => {
        await kyselyOn<{ charges: ChargesTable }>(tx).withSchema(db.schema).insertInto('charges').values({ key, amount: 1 }).execute();
        throw new Error('the handler fails after its write');
      });
      try {
        expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'kysely-fails' })).status).toBe(500);
        expect(await chargesOf('kysely-fails')).toBe(0);
        expect(await store.find('', 'kysely-fails')).toBeUndefined();
      } finally {
        await server.close();
      }
    });

    it("refuses Kysely's own transaction() (its BEGIN) with a TransactionControlError, and commits nothing", async () => {
      const refusals: unknown[] = [];
      const { server } = await app(async (tx, key) => {
        const kysely = kyselyOn<{ charges: ChargesTable }>(tx).withSchema(db.schema);
        await kysely
          .transaction()
          .execute((trx) => trx.insertInto('charges').values({ key, amount: 1 }).execute())
          .catch((error: unknown) => {
            refusals.push(error);
            throw error;
          });
      });
      try {
        expect((await postJson(`${server.url}/charge`, { amount: 1 }, { key: 'kysely-transaction' })).status).toBe(500);
        expect(refusals[0]).toBeInstanceOf(TransactionControlError);
        expect(await chargesOf('kysely-transaction')).toBe(0);
        expect(await store.find('', 'kysely-transaction')).toBeUndefined();
      } finally {
        await server.close();
      }
    });
  });
});
