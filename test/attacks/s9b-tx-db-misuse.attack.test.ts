import Koa from 'koa';
import pg from 'pg';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type TransactionalDb } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Misuse of ctx.idempotency.db in transactional mode (README "ctx.idempotency.db and query builders"), on a
 * one-connection pool so whatever a request leaves on the session is seen by the next one. After every attack:
 * one key never writes twice, a 2xx is never sent for a write that did not commit, the retry behaves as
 * documented, and the next requests on the pooled connection run with a clean session.
 */
type Attack = (tx: TransactionalDb, key: string) => Promise<void>;

let db: TestDatabase;
let charges: string;
let server: Awaited<ReturnType<typeof serve>> | undefined;
let baseline: unknown;
let pool: pg.Pool;
const attacks = new Map<string, Attack>();
let executions = 0;

/** Store statements seen on the connection after the handler returned; a hook may run a query before or after one. */
let afterHandler = false;
let storeStatements = 0;
let hook: ((n: number) => { before?: () => void; after?: () => void } | undefined) | undefined;

beforeAll(async () => {
  db = await POSTGRES_SERVER.open('s9b_tx_db_misuse');
  charges = `"${db.schema}".charges`;
  await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
});
afterAll(async () => {
  await server?.close();
  await db?.close();
});

/** A new one-connection pool, store and app for each case, so one case's leftovers cannot fail the next. */
async function start() {
  await server?.close();
  pool = db.newPool!(1);
  pool.on('connect', (client: pg.PoolClient) => {
    const original = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const step = afterHandler && hook ? hook(++storeStatements) : undefined;
      step?.before?.();
      const result = original(...args);
      step?.after?.();
      return result;
    };
  });
  const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0 });
  await store.migrate();
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser());
  app.use(idempotency({ store, transactional: true, scope: () => 'acct' }));
  app.use(async (ctx) => {
    executions++;
    const tx = ctx.idempotency!.db!;
    const key = ctx.idempotency!.key;
    const attack = attacks.get(key);
    if (attack) await attack(tx, key);
    else await tx.query(`INSERT INTO ${charges} (key, amount) VALUES ($1, 1)`, [key]);
    ctx.status = 201;
    if (attack && skipSessionRead.has(key)) {
      ctx.body = { n: executions };
      return;
    }
    // What the session looks like to this request (a clean one shows the defaults).
    const { rows } = await tx.query<Record<string, string>>(
      `SELECT current_setting('search_path') AS search_path, current_setting('transaction_read_only') AS read_only,
              current_user::text AS role, coalesce(current_setting('local.tenant', true), '') AS local_tenant,
              coalesce(current_setting('app.tenant', true), '') AS app_tenant,
              current_setting('local_preload_libraries') AS local_preload_libraries,
              (SELECT count(*) FROM pg_listening_channels())::text AS listening`,
    );
    ctx.body = { n: executions, session: rows[0] };
    afterHandler = true;
  });
  server = await serve(app);
  baseline = await freshSession();
}
const skipSessionRead = new Set<string>();

let seq = 0;
const newKey = (name: string) => `s9b-tx-${name}-${Date.now()}-${++seq}`;
const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);
const post = (key: string) => postJson(`${server!.url}/charges`, { amount: 1 }, { key });

async function freshSession(): Promise<unknown> {
  const answer = await post(newKey('health'));
  expect(answer.status).toBe(201);
  return (JSON.parse(answer.text) as { session: unknown }).session;
}

/** Runs `attack` under a fresh key, then checks exactly-once, the retry and the health of the pooled connection. */
async function attempt(name: string, attack: Attack, options: { skipSessionRead?: boolean } = {}) {
  await start();
  const key = newKey(name);
  if (options.skipSessionRead) skipSessionRead.add(key);
  attacks.set(key, attack);
  afterHandler = false;
  storeStatements = 0;
  const before = executions;
  const first = await post(key);
  hook = undefined;
  afterHandler = false;
  const afterFirst = await chargesOf(key);
  attacks.delete(key); // the retry runs the plain handler
  const retry = await post(key);
  const afterRetry = await chargesOf(key);
  const ran = executions - before;
  const outcome = { first: first.status, afterFirst, retry: retry.status, replayed: retry.headers.get('idempotent-replayed'), afterRetry, ran };
  // Never a 2xx for a write that did not commit; never a second write for one key.
  if (first.status >= 200 && first.status < 300) {
    expect(outcome).toMatchObject({ afterFirst: 1, retry: first.status, replayed: 'true', afterRetry: 1, ran: 1 });
  } else {
    expect(afterRetry).toBeLessThanOrEqual(1);
    if (afterFirst === 0 && retry.status === 201) expect(afterRetry).toBe(1);
    if (afterFirst === 1) expect(retry.status).not.toBe(201);
  }
  // The pooled connection serves the next requests with the session it had before.
  for (let i = 0; i < 3; i++) expect({ outcome, session: await freshSession() }).toEqual({ outcome, session: baseline });
  return { ...outcome, firstBody: first.text };
}

const insert = (tx: TransactionalDb, key: string) => tx.query(`INSERT INTO ${charges} (key, amount) VALUES ($1, 1)`, [key]);

describe('transaction control and session statements the keyword check must see', () => {
  it.each([
    ['-- comment ended by a carriage return\\rCOMMIT', '-- x\rCOMMIT'],
    ['-- comment ended by a carriage return\\rROLLBACK', '-- x\rROLLBACK'],
    ['form feed before COMMIT', '\fCOMMIT'],
    ['vertical tab before COMMIT', '\vCOMMIT'],
    ['/*/ */ COMMIT', '/*/ */ COMMIT'],
    ['COMMIT with a trailing comment', 'COMMIT/* done */'],
    ['END TRANSACTION', 'END TRANSACTION'],
    ['ABORT WORK', 'abort work'],
    ['ROLLBACK /* TO SAVEPOINT s */', 'ROLLBACK /* TO SAVEPOINT s */'],
    ['ROLLBACK -- TO s', 'ROLLBACK -- TO s\n'],
    ['ROLLBACK "to"', 'ROLLBACK AND NO CHAIN'],
    ['COMMIT PREPARED', "COMMIT PREPARED 'nope'"],
  ])('%s: exactly once, the connection healthy', async (_name, statement) => {
    const outcome = await attempt('control', async (tx, key) => {
      await insert(tx, key);
      await tx.query(statement);
    });
    expect(outcome.afterRetry).toBe(1);
  });

  it.each([
    ['SET /* LOCAL */ search_path', 'SET /* LOCAL */ search_path TO pg_catalog'],
    ['SET search_path TO "local"', 'SET search_path TO "local"'],
    ['SET local.tenant (a custom setting named local.*)', "SET local.tenant = 'evil'"],
    ['SET LOCAL.tenant (upper case)', "SET LOCAL.tenant = 'evil'"],
    ['SET "local".tenant', `SET "local".tenant = 'evil'`],
    ['SET local . tenant', "SET local . tenant = 'evil'"],
    ["SET LOCAL, then a comment from the checked head's last character, then .tenant", `SET LOCAL${' '.repeat(54)}--\n.tenant = 'evil'`],
    ['SET LOCAL and a no-break space (part of a name to Postgres)', "SET LOCAL\u00a0x.tenant = 'evil'"],
    ['SET local_preload_libraries (a built-in setting named local_*)', "SET local_preload_libraries = 'evil'"],
    ['SET SESSION local.tenant', "SET SESSION local.tenant = 'evil'"],
    ['SET app.tenant after a comment ending in LOCAL', "SET /* */ app.tenant = 'local'"],
    ['SET SESSION CHARACTERISTICS', 'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY'],
    ['SET ROLE', 'SET ROLE NONE'],
    ['form-feed SET', "\fSET app.tenant = 'evil'"],
    ['-- \\r SET', "-- x\rSET app.tenant = 'evil'"],
    ['RESET ROLE', 'RESET ROLE'],
    ['DEALLOCATE behind \\r comment', '-- x\rDEALLOCATE ALL'],
    ['LISTEN behind \\r comment', '-- x\rLISTEN s9b_channel'],
  ])('%s: exactly once, the session of the next requests unchanged', async (_name, statement) => {
    const outcome = await attempt('session', async (tx, key) => {
      await insert(tx, key);
      await tx.query(statement);
    });
    expect(outcome.afterRetry).toBe(1);
    // README: "SET without LOCAL" is refused by the capability (500, nothing committed).
    expect(outcome.first).toBe(500);
  });
});

describe('query() called with something other than a text', () => {
  it.each([
    ['a pg QueryConfig { text: COMMIT }', { text: 'COMMIT' }],
    ['a String object', new String('COMMIT')],
    ['an object whose toString() is COMMIT', { toString: (): string => 'COMMIT' }],
    ['a QueryConfig SET app.tenant', { text: "SET app.tenant = 'evil'" }],
    ['a QueryConfig with queryMode simple and two statements', { text: "SELECT 1; SET app.tenant = 'evil'", queryMode: 'simple' }],
  ])('%s: refused or harmless', async (_name, statement) => {
    const outcome = await attempt('non-text', async (tx, key) => {
      await insert(tx, key);
      await (tx.query as (text: unknown) => Promise<unknown>)(statement);
    });
    expect(outcome.afterRetry).toBe(1);
  });
});

describe('queries in parallel, failing, or killing the session', () => {
  it('Promise.all with a failing query, the error caught: never a 2xx', async () => {
    const outcome = await attempt('parallel', async (tx, key) => {
      await Promise.all([insert(tx, key), tx.query('SELECT 1/0'), tx.query('SELECT 2')]).catch(() => undefined);
    });
    expect(outcome.first).toBe(500);
  });

  it('a handler that terminates its own backend: 503, the retry runs once, the pool recovers', async () => {
    const outcome = await attempt(
      'terminate',
      async (tx, key) => {
        await insert(tx, key);
        await tx.query('SELECT pg_terminate_backend(pg_backend_pid())').catch(() => undefined);
      },
      { skipSessionRead: true },
    );
    expect(outcome.first).toBe(503);
  });
});

describe('a kept handle used while the middleware completes the claim', () => {
  it.each([1, 2, 3, 4].flatMap((n) => [['before', n] as const, ['after', n] as const]))(
    'a failing query sent %s the store statement no. %i after the handler: never a 2xx for a rolled-back write',
    async (where, n) => {
      let kept: TransactionalDb | undefined;
      const errors: unknown[] = [];
      const outcome = await attempt('completion-window', async (tx, key) => {
        kept = tx;
        await insert(tx, key);
        hook = (statement) => {
          if (statement !== n) return undefined;
          const fire = () => void kept!.query('SELECT 1/0').catch((error: unknown) => errors.push(error));
          return where === 'before' ? { before: fire } : { after: fire };
        };
      });
      expect(errors.length).toBeLessThanOrEqual(1);
      expect(outcome.afterRetry).toBe(1);
    },
  );
});
