import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll } from 'vitest';
import { idempotency, type IdempotencyOptions, type TransactionalDb } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { rowsWithKey, type DatabaseTarget, type TestDatabase } from './databases.js';
import { serve } from './http.js';

/**
 * What the attacks on transactional mode's `ctx.idempotency.db` capability share
 * (test/attacks/tx-capability-*.attack.test.ts): a charges table, one-connection stores, and an app whose
 * handler the test scripts. One key must never run its business write twice, never commit a write without
 * its stored response, never leak the connection or the session state of the connection to the next request
 * of the pool.
 */

/** A Postgres-server-only case's name, saying on PGlite why it is skipped there. */
export const onServerOnly = (targetName: string, name: string) =>
  targetName.startsWith('Postgres server') ? name : `${name} (skipped on PGlite: one in-process session, no pooled connection to share or lose)`;

export type Handle = (db: TransactionalDb, key: string, execution: number, ctx: Koa.Context) => Promise<void>;

/**
 * Opens the schema of one test file on `target` (named after `prefix`), in the describe block that calls it.
 * `db` and `charges` are set once the block's beforeAll has run.
 */
export function txCapabilityHarness(target: DatabaseTarget, prefix: string) {
  let db: TestDatabase;
  let charges: string;

  beforeAll(async () => {
    db = await target.open(prefix);
    charges = `"${db.schema}".charges`;
    await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
  });
  afterAll(() => db?.close());

  const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);

  /** A store on a one-connection pool (Postgres) so session state left behind by a handler is seen by the next request. */
  async function oneConnectionStore(): Promise<PostgresStore> {
    if (db.kind === 'pglite') return db.store({ replayCacheEntries: 0 });
    const store = new PostgresStore({ pool: db.newPool!(1), schema: db.schema, replayCacheEntries: 0 });
    await store.migrate();
    return store;
  }

  async function app(store: PostgresStore, handle: Handle, options: Partial<IdempotencyOptions> = {}) {
    let executions = 0;
    const koa = new Koa();
    koa.silent = true;
    koa.use(bodyParser());
    koa.use(idempotency({ store, transactional: true, ...options }));
    koa.use(async (ctx) => {
      executions++;
      await handle(ctx.idempotency!.db!, ctx.idempotency!.key, executions, ctx);
      if (ctx.body === undefined) {
        ctx.status = 201;
        ctx.body = { charged: true };
      }
    });
    return { server: await serve(koa), executions: () => executions };
  }

  const insertCharge = (tx: TransactionalDb, key: string) => tx.query(`INSERT INTO ${charges} (key, amount) VALUES ($1, 1)`, [key]);

  return {
    get db() {
      return db;
    },
    get charges() {
      return charges;
    },
    chargesOf,
    oneConnectionStore,
    app,
    insertCharge,
  };
}
