import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, TransactionControlError, type TransactionalDb } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * The transaction-control filter reads past leading comments the way it thinks Postgres does. Postgres ends a
 * `--` comment at a carriage return as well as at a newline; a filter that only looks for `\n` skips the
 * whole text and lets the statement after `\r` through.
 */

type Handle = (db: TransactionalDb, key: string, execution: number) => Promise<void>;

for (const target of databaseTargets({ pipelined: true })) {
  describe(`transaction-control filter bypasses on ${target.name}`, () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let charges: string;
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    beforeAll(async () => {
      db = await target.open('atk_filter');
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

    it.each(['-- note\rCOMMIT', '-- note\rROLLBACK', '-- note\rBEGIN', '/* a */ -- b\rEND'])(
      'refuses %j (a line comment ended by a carriage return) with a TransactionControlError before it reaches Postgres',
      async (statement) => {
        const outcomes: unknown[] = [];
        const { server } = await app(async (tx, key, execution) => {
          await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [key]);
          if (execution === 1) {
            await tx.query(statement).then(
              () => outcomes.push('ran'),
              (error: unknown) => outcomes.push(error instanceof TransactionControlError ? 'refused' : `failed: ${String(error)}`),
            );
          }
        });
        try {
          await postJson(`${server.url}/c`, {}, { key: newKey('cr') });
          expect(outcomes).toEqual(['refused']);
        } finally {
          await server.close();
        }
      },
    );

    it('"-- x\\rROLLBACK" then an ordinary parameterised INSERT: the write escapes the claim, so the key must still write only once', async () => {
      const { server, executions } = await app(async (tx, key, execution) => {
        if (execution === 1) await tx.query('-- undo the claim\rROLLBACK').catch(() => undefined);
        await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [key]);
      });
      const key = newKey('cr-rollback');
      try {
        const first = await postJson(`${server.url}/c`, {}, { key });
        const retry = await postJson(`${server.url}/c`, {}, { key });
        const again = await postJson(`${server.url}/c`, {}, { key });
        expect({ first: first.status, executions: executions(), charges: await chargesOf(key), again: again.status }).toEqual({
          first: first.status,
          executions: 1,
          charges: 1,
          again: again.status,
        });
        expect(retry.status).not.toBe(500);
      } finally {
        await server.close();
      }
    });

    it('"-- x\\rCOMMIT" then the handler answers: the early-committed write is detected at completion and the retry does not run it again', async () => {
      const { server, executions } = await app(async (tx, key, execution) => {
        await tx.query(`INSERT INTO ${charges} VALUES ($1, 1)`, [key]);
        if (execution === 1) await tx.query('-- done\rCOMMIT').catch(() => undefined);
      });
      const key = newKey('cr-commit');
      try {
        await postJson(`${server.url}/c`, {}, { key });
        await postJson(`${server.url}/c`, {}, { key });
        expect([executions(), await chargesOf(key)]).toEqual([1, 1]);
      } finally {
        await server.close();
      }
    });
  });
}
