import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, TransactionControlError, type TransactionalDb } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Careless or hostile use of ctx.idempotency.db in transactional mode on PGlite, where the handler's
 * transaction runs on the one session the store and every other request share. After each attack: one key
 * never writes twice, a 2xx never stands for a write that did not commit, nothing hangs, and the next request
 * on the same PGlite still works.
 */

type Handle = (db: TransactionalDb, key: string, execution: number) => Promise<void>;

let pglite: PGlite;
let store: PostgresStore;
let server: Awaited<ReturnType<typeof serve>>;
const handlers = new Map<string, Handle>();
const executions = new Map<string, number>();

beforeAll(async () => {
  pglite = await PGlite.create();
  await pglite.query('CREATE TABLE charges (key text NOT NULL, amount int NOT NULL)');
  await pglite.query('CREATE TABLE uniq (key text PRIMARY KEY)');
  await pglite.query(`CREATE PROCEDURE commit_now() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$`);
  store = new PostgresStore({ pglite, replayCacheEntries: 0 });
  await store.migrate();
  const koa = new Koa();
  koa.silent = true;
  koa.use(bodyParser());
  koa.use(idempotency({ store, transactional: true }));
  koa.use(async (ctx) => {
    const key = ctx.idempotency!.key;
    const execution = (executions.get(key) ?? 0) + 1;
    executions.set(key, execution);
    const handle = handlers.get(key.replace(/#.*$/, '')) ?? insertCharge;
    await handle(ctx.idempotency!.db!, key, execution);
    ctx.status = 201;
    ctx.body = { charged: true };
  });
  server = await serve(koa);
});
afterAll(async () => {
  await server?.close();
  await store?.close();
  await pglite?.close();
});

let counter = 0;
const insertCharge: Handle = async (tx, key) => {
  await tx.query('INSERT INTO charges (key, amount) VALUES ($1, 1)', [key]);
};
const post = (key: string) => postJson(`${server.url}/charges`, { amount: 1 }, { key });
const chargesOf = async (key: string) => (await pglite.query<{ n: number }>('SELECT count(*)::int AS n FROM charges WHERE key = $1', [key])).rows[0]!.n;

/** Runs `attack` on the first execution of a fresh key, then the plain handler on its retry; then a healthy key. */
async function attempt(name: string, attack: Handle) {
  const base = `s10-cap-${name}-${++counter}`;
  const key = `${base}#1`;
  handlers.set(base, async (tx, k, execution) => (execution === 1 ? attack(tx, k, execution) : insertCharge(tx, k, execution)));
  const first = await post(key);
  const afterFirst = await chargesOf(key);
  const retry = await post(key);
  const afterRetry = await chargesOf(key);
  const healthy = `s10-cap-healthy-${++counter}`;
  const next = await post(healthy);
  return { first: first.status, afterFirst, retry: retry.status, afterRetry, next: next.status, nextCharges: await chargesOf(healthy), executions: executions.get(key) };
}

/** The invariants every attack must keep. */
function expectSafe(outcome: Awaited<ReturnType<typeof attempt>>) {
  if (outcome.first < 300) expect(outcome.afterFirst).toBe(1);
  expect(outcome.afterRetry).toBe(1);
  expect(outcome.retry).toBe(201);
  expect([outcome.next, outcome.nextCharges]).toEqual([201, 1]);
}

describe('PGlite: ctx.idempotency.db misuse in transactional mode', () => {
  it('"INSERT ...; COMMIT" in one text is refused (one statement per query) and nothing commits', async () => {
    const outcome = await attempt('multi', async (tx, key) => {
      await tx.query(`INSERT INTO charges (key, amount) VALUES ('${key}', 1); COMMIT`);
    });
    expect(outcome.first).toBe(500);
    expectSafe(outcome);
  });

  it('a DO block that COMMITs, and a procedure that COMMITs (CALL), cannot end the claim early', async () => {
    for (const text of [`DO $$ BEGIN COMMIT; END $$`, 'CALL commit_now()']) {
      const outcome = await attempt('do-commit', async (tx, key) => {
        await insertCharge(tx, key, 1);
        await tx.query(text).catch(() => undefined);
      });
      expect(outcome.first).toBe(500);
      expectSafe(outcome);
    }
  });

  it('BEGIN / ROLLBACK / commit() through the capability are refused with a TransactionControlError', async () => {
    const seen: unknown[] = [];
    const outcome = await attempt('control', async (tx, key) => {
      await insertCharge(tx, key, 1);
      for (const text of ['ROLLBACK', '  begin', 'END', 'ABORT', "PREPARE TRANSACTION 'x'", 'SET search_path = x', 'LISTEN x', 'DEALLOCATE ALL']) {
        seen.push(await tx.query(text).catch((error: unknown) => error instanceof TransactionControlError));
      }
      try {
        tx.commit();
      } catch (error) {
        seen.push(error instanceof TransactionControlError);
      }
    });
    expect(seen.every((value) => value === true)).toBe(true);
    expect(outcome.first).toBe(201);
    expectSafe(outcome);
  });

  it('a DO block that runs DEALLOCATE ALL, and one that leaves the transaction aborted (error caught, no savepoint): no stuck record, the next keys work', async () => {
    const dealloc = await attempt('dealloc', async (tx, key) => {
      await insertCharge(tx, key, 1);
      await tx.query(`DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$`);
    });
    expect(dealloc.first).toBe(201);
    expectSafe(dealloc);
    const aborted = await attempt('aborted', async (tx, key) => {
      await insertCharge(tx, key, 1);
      await tx.query('SELECT 1/0').catch(() => undefined);
    });
    expect([aborted.first, aborted.afterFirst]).toEqual([500, 0]);
    expectSafe(aborted);
  });

  it('a handler that throws after writing: rolled back, the retry writes once', async () => {
    const outcome = await attempt('throw', async (tx, key) => {
      await insertCharge(tx, key, 1);
      throw new Error('handler failed after its write');
    });
    expect([outcome.first, outcome.afterFirst]).toEqual([500, 0]);
    expectSafe(outcome);
  });

  it('a handler that never awaits its INSERT: it commits with the response, once', async () => {
    const outcome = await attempt('unawaited', async (tx, key) => {
      void tx.query('INSERT INTO charges (key, amount) VALUES ($1, 1)', [key]).catch(() => undefined);
    });
    expect([outcome.first, outcome.afterFirst]).toEqual([201, 1]);
    expectSafe(outcome);
  });

  it('a handler whose unawaited statement fails after it returned: no 201 for an aborted transaction', async () => {
    await pglite.query("INSERT INTO uniq VALUES ('taken') ON CONFLICT DO NOTHING");
    const outcome = await attempt('unawaited-fail', async (tx, key) => {
      await insertCharge(tx, key, 1);
      void tx.query("INSERT INTO uniq VALUES ('taken')").catch(() => undefined);
    });
    expect(outcome.first === 201 ? outcome.afterFirst : 0).toBe(outcome.first === 201 ? 1 : 0);
    expectSafe(outcome);
  });

  it('a handle kept past the handler and used from a timer while ANOTHER request holds the PGlite transaction is refused, not run in that transaction', async () => {
    let kept: TransactionalDb | undefined;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let holding!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    const base = `s10-cap-kept-${++counter}`;
    const victim = `s10-cap-victim-${++counter}`;
    handlers.set(base, async (tx, key) => {
      kept = tx;
      await insertCharge(tx, key, 1);
    });
    handlers.set(victim, async (tx, key) => {
      holding();
      await gate;
      await insertCharge(tx, key, 1);
    });
    expect((await post(`${base}#1`)).status).toBe(201);
    const victimAnswer = post(victim);
    await held;
    // The kept handle, from a timer: the victim's transaction is the one open on the session now.
    const misuse = await new Promise<unknown>((resolve) =>
      setImmediate(() => void kept!.query("INSERT INTO charges (key, amount) VALUES ('smuggled', 1)").then(resolve, resolve)),
    );
    release();
    expect(misuse).toBeInstanceOf(TransactionControlError);
    expect((await victimAnswer).status).toBe(201);
    expect([await chargesOf('smuggled'), await chargesOf(victim)]).toEqual([0, 1]);
  });
});
