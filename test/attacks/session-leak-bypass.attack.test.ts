import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, TransactionControlError, type TransactionalDb } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Round 2: the keyword filter refuses SET (without LOCAL), RESET, DISCARD, DEALLOCATE, LISTEN, ... and the
 * store drops session advisory locks and LISTENs after COMMIT/ROLLBACK. Session state reachable without
 * those keywords (set_config(..., false), DO blocks, temp tables, held cursors) must not reach the next
 * request on the pooled connection either, and must never cause a double execution.
 */

type Handle = (db: TransactionalDb, key: string, execution: number, ctx: Koa.Context) => Promise<void>;

const servers = databaseTargets({ pipelined: true }).filter((t) => t.name.startsWith('Postgres server'));

describe.each(servers)('session state leak bypasses on $name (one-connection pool)', (target) => {
  let db: TestDatabase;
  let charges: string;
  let counter = 0;
  const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

  beforeAll(async () => {
    db = await target.open('atk_sess2');
    charges = `"${db.schema}".charges`;
    await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
  });
  afterAll(() => db?.close());

  async function oneConnection() {
    const pool = db.newPool!(1);
    const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0 });
    await store.migrate();
    return { pool, store };
  }

  async function app(store: PostgresStore, handle: Handle) {
    let executions = 0;
    const koa = new Koa();
    koa.silent = true;
    koa.use(bodyParser());
    koa.use(idempotency({ store, transactional: true }));
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

  it('a DO block that runs DEALLOCATE ALL costs the next claim on that connection one 503, then the connection is replaced', async () => {
    const { store } = await oneConnection();
    const { server } = await app(store, async (tx, key, execution) => {
      await insertCharge(tx, key);
      if (execution === 1) await tx.query(`DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$`).catch(() => undefined);
    });
    try {
      const first = await postJson(`${server.url}/c`, {}, { key: newKey('do-dealloc-a') });
      const later: number[] = [];
      for (let i = 0; i < 3; i++) later.push((await postJson(`${server.url}/c`, {}, { key: newKey('do-dealloc-b') })).status);
      expect({ later }).toEqual({ later: [503, 201, 201] });
      expect([201, 500]).toContain(first.status);
    } finally {
      await server.close();
      await store.close();
    }
  });

  it('a TEMP table created by one request (no ON COMMIT DROP) does not outlive it on the pooled connection', async () => {
    const { store } = await oneConnection();
    const statuses: number[] = [];
    const { server } = await app(store, async (tx, key) => {
      await tx.query('CREATE TEMP TABLE staging (v int)');
      await insertCharge(tx, key);
    });
    try {
      statuses.push((await postJson(`${server.url}/c`, {}, { key: newKey('temp-a') })).status);
      statuses.push((await postJson(`${server.url}/c`, {}, { key: newKey('temp-b') })).status);
      expect(statuses).toEqual([201, 201]);
    } finally {
      await server.close();
      await store.close();
    }
  });

  it('a cursor DECLAREd WITH HOLD by one request does not outlive it on the pooled connection', async () => {
    const { store } = await oneConnection();
    const cursors: number[] = [];
    const { server } = await app(store, async (tx, key, execution) => {
      // The statement's own unnamed portal is listed too (the extended protocol): count named cursors only.
      const { rows } = await tx.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_cursors WHERE name <> ''");
      cursors.push(rows[0]!.n);
      if (execution === 1) await tx.query('DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 1000)');
      await insertCharge(tx, key);
    });
    try {
      await postJson(`${server.url}/c`, {}, { key: newKey('cur-a') });
      await postJson(`${server.url}/c`, {}, { key: newKey('cur-b') });
      expect(cursors).toEqual([0, 0]);
    } finally {
      await server.close();
      await store.close();
    }
  });

  it.each(['set/**/session statement_timeout = 1', 'SET\u000bstatement_timeout = 1', '/* x */ reset ALL', 'discard plans', 'SET SESSION AUTHORIZATION DEFAULT'])(
    '%j is refused with a TransactionControlError',
    async (statement) => {
      const { store } = await oneConnection();
      const outcomes: string[] = [];
      const { server } = await app(store, async (tx, key) => {
        await tx.query(statement).then(
          () => outcomes.push('ran'),
          (error: unknown) => outcomes.push(error instanceof TransactionControlError ? 'refused' : `failed: ${String(error)}`),
        );
        await insertCharge(tx, key);
      });
      try {
        await postJson(`${server.url}/c`, {}, { key: newKey('kw') });
        expect(outcomes[0] === 'refused' || outcomes[0]!.startsWith('failed')).toBe(true);
        expect(outcomes).not.toContain('ran');
      } finally {
        await server.close();
        await store.close();
      }
    },
  );

  it('a procedure that COMMITs (CALL) cannot end the claim early: one key, one charge across a retry', async () => {
    await db.sql.query(`CREATE OR REPLACE PROCEDURE "${db.schema}".commit_now() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$`);
    const store = await db.store({ replayCacheEntries: 0 });
    const { server, executions } = await app(store, async (tx, key, execution) => {
      await insertCharge(tx, key);
      if (execution === 1) await tx.query(`CALL "${db.schema}".commit_now()`).catch(() => undefined);
    });
    const key = newKey('call-commit');
    try {
      await postJson(`${server.url}/c`, {}, { key });
      await postJson(`${server.url}/c`, {}, { key });
      // The CALL fails inside the claim's transaction block (invalid transaction termination), so a
      // second execution after a rolled-back first is fine: what matters is one committed charge.
      expect(await rowsWithKey(db.sql, charges, key)).toBe(1);
      expect(executions()).toBeLessThanOrEqual(2);
    } finally {
      await server.close();
    }
  });
});
