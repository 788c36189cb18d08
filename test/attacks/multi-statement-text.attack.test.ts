import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type TransactionalDb } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * `ctx.idempotency.db.query(text)` documents "runs ONE statement in the claim's transaction (a text of several is
 * refused by Postgres)". The Citus branch made the PGlite adapter send every parameterless text with exec() (a
 * simple query, several statements allowed) so that the claim's `SET LOCAL …; SET LOCAL …; SELECT …` could go in
 * one text. A handler's parameterless text with a ROLLBACK or a session SET after its first statement then gets
 * past the keyword check, which reads only the first statement.
 */

type Handle = (db: TransactionalDb, key: string, execution: number) => Promise<void>;

for (const target of databaseTargets()) {
  describe(`multi-statement texts through ctx.idempotency.db on ${target.name}`, () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let charges: string;
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    beforeAll(async () => {
      db = await target.open('atk_multi');
      charges = `"${db.schema}".charges`;
      await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
      store = await db.store({ replayCacheEntries: 0 });
    });
    afterAll(() => db?.close());

    const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);

    async function app(handle: Handle) {
      let executions = 0;
      const koa = new Koa();
      koa.silent = true;
      koa.use(bodyParser());
      koa.use(idempotency({ store, transactional: true }));
      koa.use(async (ctx) => {
        executions++;
        await handle(ctx.idempotency!.db!, ctx.idempotency!.key, executions);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      return { server: await serve(koa), executions: () => executions };
    }

    it('"INSERT …; ROLLBACK; INSERT …" in one parameterless text: the key must still write its charge only once across retries', async () => {
      const key = newKey('multi-rollback');
      const { server } = await app(async (tx, k, execution) => {
        if (execution === 1) {
          await tx.query(`INSERT INTO ${charges} VALUES ('${k}', 1); ROLLBACK; INSERT INTO ${charges} VALUES ('${k}', 1)`);
        } else {
          await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [k]);
        }
      });
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const retry = await postJson(`${server.url}/c`, {}, { key });
        const again = await postJson(`${server.url}/c`, {}, { key });
        expect({ statuses: [first.status, retry.status, again.status], charges: await chargesOf(key) }).toMatchObject({ charges: 1 });
      } finally {
        await server.close();
      }
    });

    it('"SELECT 1; COMMIT; INSERT …" in one text: the write committed outside the claim is never repeated by a retry', async () => {
      const key = newKey('multi-commit');
      const { server } = await app(async (tx, k, execution) => {
        if (execution === 1) await tx.query(`SELECT 1; COMMIT; INSERT INTO ${charges} VALUES ('${k}', 1)`);
        else await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [k]);
      });
      try {
        await postJson(`${server.url}/c`, {}, { key });
        await postJson(`${server.url}/c`, {}, { key });
        await postJson(`${server.url}/c`, {}, { key });
        expect(await chargesOf(key)).toBe(1);
      } finally {
        await server.close();
      }
    });

    it('"SELECT 1; SET default_transaction_read_only = on" in one text is refused and does not break the next key', async () => {
      const { server } = await app(async (tx, k, execution) => {
        if (execution === 1) await tx.query('SELECT 1; SET default_transaction_read_only = on').catch(() => undefined);
        await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [k]);
      });
      try {
        // The first request may fail (Postgres refuses the text and aborts the transaction) or answer: either way
        // the session setting must not reach the next request.
        await postJson(`${server.url}/c`, {}, { key: newKey('multi-set-1') });
        const next = await postJson(`${server.url}/c`, {}, { key: newKey('multi-set-2') });
        expect(next.status).toBe(201);
      } finally {
        // The session setting, if it leaked, must not break the other tests of this file.
        await db.sql.query('SET default_transaction_read_only = off').catch(() => undefined);
        await server.close();
      }
    });
  });
}
