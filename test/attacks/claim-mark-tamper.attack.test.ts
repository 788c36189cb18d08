import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type TransactionalDb } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * The store tells "the handler ended the claim's transaction" from "the claim is still open" by a
 * transaction-local setting (koa_idempotency.claim_mark). A handler can change that setting with SET LOCAL or
 * set_config(..., true), both allowed. The claim's transaction is then still open with the handler's writes:
 * the outcome must be one of the two honest ones (committed with its stored response, or rolled back and the
 * retry runs again), never "rolled back, yet kept as executed" (the operation never happens, and every
 * retry is refused).
 */

type Handle = (db: TransactionalDb, key: string, execution: number) => Promise<void>;

for (const target of databaseTargets({ pipelined: true })) {
  describe(`claim mark tampering on ${target.name}`, () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let charges: string;
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    beforeAll(async () => {
      db = await target.open('atk_mark');
      charges = `"${db.schema}".charges`;
      await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
      store = await db.store({ replayCacheEntries: 0 });
    });
    afterAll(() => db?.close());

    async function app(handle: Handle, fail = false) {
      let executions = 0;
      const koa = new Koa();
      koa.silent = true;
      koa.use(bodyParser());
      koa.use(idempotency({ store, transactional: true }));
      koa.use(async (ctx) => {
        executions++;
        await handle(ctx.idempotency!.db!, ctx.idempotency!.key, executions);
        if (fail && executions === 1) throw new Error('handler failed');
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      return { server: await serve(koa), executions: () => executions };
    }

    it.each([["SELECT set_config('koa_idempotency.claim_mark', '1', true)"], ["SET LOCAL koa_idempotency.claim_mark = ''"]])(
      '%s in a handler that answers 201: the write is committed with its response, or rolled back and run again by the retry',
      async (statement) => {
        const { server, executions } = await app(async (tx, key, execution) => {
          await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [key]);
          if (execution === 1) await tx.query(statement);
        });
        const key = newKey('mark');
        try {
          const first = await postJson(`${server.url}/c`, {}, { key });
          const retry = await postJson(`${server.url}/c`, {}, { key });
          const charged = await rowsWithKey(db.sql, charges, key);
          // Exactly one charge in the end, and the retry gets a 201 (replayed or run again).
          expect({ charged, retry: retry.status, firstThenRetry: `${first.status} -> ${retry.status} (${executions()} executions)` }).toEqual({
            charged: 1,
            retry: 201,
            firstThenRetry: expect.stringMatching(/ -> 201/),
          });
        } finally {
          await server.close();
        }
      },
    );

    it('a handler that changes the mark and then throws: nothing committed, so the retry must run the operation', async () => {
      const { server, executions } = await app(async (tx, key, execution) => {
        await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [key]);
        if (execution === 1) await tx.query("SELECT set_config('koa_idempotency.claim_mark', '', true)");
      }, true);
      const key = newKey('mark-throw');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const retry = await postJson(`${server.url}/c`, {}, { key });
        expect({ first: first.status, retry: retry.status, executions: executions(), charged: await rowsWithKey(db.sql, charges, key) }).toEqual({
          first: 500,
          retry: 201,
          executions: 2,
          charged: 1,
        });
      } finally {
        await server.close();
      }
    });
  });
}
