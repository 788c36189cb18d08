import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { PGlite } from '@electric-sql/pglite';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency, type TransactionalDb } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Session state a transactional handler leaves behind on PGlite. On a server the store drops session advisory
 * locks, LISTENs, WITH HOLD cursors and temporary tables with the COMMIT (README "ctx.idempotency.db and query
 * builders"; test/attacks/session-leak-bypass.attack.test.ts, server only). PGlite is ONE session, shared by the
 * store and every later request: its transaction drops, before COMMIT, the temporary relations and WITH HOLD
 * cursors it created (pglite-database.ts), and nothing the application made before. Each test has its own PGlite.
 */

type Handle = (db: TransactionalDb, key: string, execution: number) => Promise<void>;

let pglite: PGlite | undefined;
let closeServer: (() => Promise<void>) | undefined;
afterEach(async () => {
  await closeServer?.();
  await pglite?.close();
  closeServer = undefined;
  pglite = undefined;
});

let counter = 0;
const newKey = (name: string) => `s10-${name}-${++counter}-${Date.now()}`;

async function open(handle: Handle, options: { onInProgress?: 'wait' | 'reject'; waitRecheckMs?: number } = {}) {
  pglite = await PGlite.create();
  // The business table in public, reached by an unqualified name as a handler usually writes it.
  await pglite.query('CREATE TABLE charges (key text NOT NULL, amount int NOT NULL)');
  const store = new PostgresStore({ pglite, replayCacheEntries: 0 });
  await store.migrate();
  let executions = 0;
  const koa = new Koa();
  koa.silent = true;
  koa.use(bodyParser());
  koa.use(idempotency({ store, transactional: true, waitMs: 8_000, ...options }));
  koa.use(async (ctx) => {
    executions++;
    await handle(ctx.idempotency!.db!, ctx.idempotency!.key, executions);
    ctx.status = 201;
    ctx.body = { charged: true, execution: executions };
  });
  const server = await serve(koa);
  closeServer = async () => {
    await server.close();
    await store.close();
  };
  const db = pglite;
  return {
    post: (key: string) => postJson(`${server.url}/charges`, { amount: 1 }, { key }),
    chargesOf: async (key: string) => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM public.charges WHERE key = $1', [key])).rows[0]!.n,
    executions: () => executions,
  };
}

const insertCharge = (tx: TransactionalDb, key: string) => tx.query('INSERT INTO charges (key, amount) VALUES ($1, 1)', [key]);

describe('PGlite: session state left by a transactional handler', () => {
  it.each([
    ['a TEMP table created by one request (no ON COMMIT DROP) does not make the same handler fail on the next key', 'temp', 'CREATE TEMP TABLE staging (v int)'],
    [
      'a cursor DECLAREd WITH HOLD by one request does not outlive it (the next request can DECLARE the same name)',
      'cursor',
      'DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 10)',
    ],
  ])('%s', async (_name, label, leftover) => {
    const app = await open(async (tx, key) => {
      await tx.query(leftover);
      await insertCharge(tx, key);
    });
    const a = newKey(`${label}-a`);
    const b = newKey(`${label}-b`);
    const statuses = [(await app.post(a)).status, (await app.post(b)).status];
    expect({ statuses, charges: [await app.chargesOf(a), await app.chargesOf(b)] }).toEqual({ statuses: [201, 201], charges: [1, 1] });
  });

  it("a TEMP table that shadows a business table does not capture a later request's committed write (201 but no row in the real table)", async () => {
    const app = await open(async (tx, key, execution) => {
      // A careless handler stages rows in a temp table of the same name as the real one.
      if (execution === 1) await tx.query('CREATE TEMP TABLE charges (key text, amount int)');
      await insertCharge(tx, key);
    });
    const a = newKey('shadow-a');
    const b = newKey('shadow-b');
    const first = await app.post(a);
    const second = await app.post(b);
    // The second request is a plain, correct handler: its 201 must mean its charge is in public.charges.
    expect({ second: second.status, realRowsOfSecond: await app.chargesOf(b) }).toEqual({ second: 201, realRowsOfSecond: 1 });
    expect(first.status).toBe(201);
  });

  it("keeps the application's own temporary table and WITH HOLD cursor, made before the request, while the handler's go", async () => {
    const app = await open(async (tx, key) => {
      await tx.query('CREATE TEMP TABLE handler_scratch (v int)');
      await tx.query('DECLARE handler_held CURSOR WITH HOLD FOR SELECT 1');
      await insertCharge(tx, key);
    });
    // The application's own session objects on the same PGlite (PGlite's live queries are temporary views).
    await pglite!.query('CREATE TEMP TABLE app_cache (v int)');
    await pglite!.query('CREATE TEMP VIEW app_view AS SELECT 1 AS one');
    await pglite!.exec('BEGIN; DECLARE app_held CURSOR WITH HOLD FOR SELECT 1; COMMIT');
    const key = newKey('own');
    expect((await app.post(key)).status).toBe(201);
    const temps = await pglite!.query<{ relname: string }>(
      'SELECT relname FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relkind IN ($1, $2) ORDER BY relname',
      ['r', 'v'],
    );
    const cursors = await pglite!.query<{ name: string }>('SELECT name FROM pg_cursors WHERE is_holdable ORDER BY name');
    expect({ temps: temps.rows.map((row) => row.relname), cursors: cursors.rows.map((row) => row.name), charges: await app.chargesOf(key) }).toEqual({
      temps: ['app_cache', 'app_view'],
      cursors: ['app_held'],
      charges: 1,
    });
  });

  it("a set_config(search_path, ..., false) left by a handler (documented: session settings are not reset) does not redirect the store's own statements", async () => {
    const app = await open(async (tx, key, execution) => {
      if (execution === 1) {
        await tx.query('CREATE SCHEMA IF NOT EXISTS tenant_x');
        await tx.query('CREATE TABLE IF NOT EXISTS tenant_x.idempotency_records (scope text, key text)');
        await tx.query("SELECT set_config('search_path', 'tenant_x', false)");
      }
      await tx.query('INSERT INTO public.charges (key, amount) VALUES ($1, 1)', [key]);
    });
    const a = newKey('sp-a');
    const b = newKey('sp-b');
    const statuses = [(await app.post(a)).status, (await app.post(b)).status, (await app.post(b)).status];
    expect(statuses).toEqual([201, 201, 201]);
    expect([await app.chargesOf(a), await app.chargesOf(b), app.executions()]).toEqual([1, 1, 2]);
    const { rows } = await pglite!.query<{ n: number }>('SELECT count(*)::int AS n FROM tenant_x.idempotency_records');
    expect(rows[0]!.n).toBe(0);
  });
});
