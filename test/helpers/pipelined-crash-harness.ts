import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { idempotency, type IdempotencyOptions } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, DATABASE_URL, rowsWithKey, type TestDatabase } from './databases.js';
import { serve } from './http.js';

/**
 * What the attacks on transactional mode over a pipelined pool (test/attacks/pipelined-crash-*.attack.test.ts)
 * share: a schema with a charges table and a `gated` table whose deferred trigger holds the COMMIT, apps on a
 * pipelined or an unpipelined pool, and the checks. Each scenario runs on both pools; the answers must agree
 * and every key must charge once.
 */

export let keySeq = 0;
export const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;
const server = POSTGRES_SERVER;

export type Tdb = NonNullable<NonNullable<Koa.Context['idempotency']>['db']>;
type Handler = (ctx: Koa.Context, db: Tdb) => Promise<void>;

export function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/** Polls `check` (a query) until it returns true: bounded, each attempt waits for a round trip to the server. */
export async function until(check: () => Promise<boolean>, what: string, attempts = 2_000): Promise<void> {
  for (let i = 0; i < attempts; i++) if (await check()) return;
  throw new Error(`never observed: ${what}`);
}

/**
 * Opens the schema of one test file (named after `prefix`), in the describe block that calls it. `db`, `admin`
 * (a direct client) and the tables' names are set once the block's beforeAll has run.
 */
export function pipelinedCrashHarness(prefix: string) {
  let db: TestDatabase;
  let charges: string;
  let records: string;
  let gated: string;
  let admin: pg.Client;
  const closing: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    db = await server.open(prefix);
    records = `"${db.schema}".idempotency_records`;
    charges = `"${db.schema}".charges`;
    gated = `"${db.schema}".gated`;
    await (await db.store()).migrate();
    await db.sql.query(`CREATE TABLE ${charges} (seq bigserial PRIMARY KEY, key text NOT NULL, n int NOT NULL)`);
    await db.sql.query(`CREATE TABLE ${gated} (key text NOT NULL, gate bigint NOT NULL)`);
    // A deferred constraint trigger that waits, at COMMIT, for an advisory lock the test holds: the COMMIT is
    // observably in progress (pg_locks) while the test kills its connection.
    await db.sql.query(`CREATE FUNCTION "${db.schema}".wait_gate() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock(NEW.gate); RETURN NULL; END $$`);
    await db.sql.query(`CREATE CONSTRAINT TRIGGER wait_gate AFTER INSERT ON ${gated} DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION "${db.schema}".wait_gate()`);
    admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });
  afterAll(async () => {
    await admin?.end();
    await db?.close();
  });

  async function start(
    pipeline: boolean,
    handler: Handler,
    options: { max?: number; idempotency?: Partial<IdempotencyOptions>; pgOptions?: string; lockTimeoutMs?: number; queryTimeoutMs?: number } = {},
  ) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: options.max ?? 1, pipeline, options: options.pgOptions, query_timeout: options.queryTimeoutMs });
    pool.on('error', () => undefined);
    const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0, lockTimeoutMs: options.lockTimeoutMs ?? 2_000 });
    let executions = 0;
    let arrivals = 0;
    const app = new Koa();
    app.silent = true;
    app.use(async (_ctx, next) => {
      arrivals++;
      await next();
    });
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true, ...options.idempotency }));
    app.use(async (ctx) => {
      executions++;
      await handler(ctx, ctx.idempotency!.db!);
    });
    const http = await serve(app);
    closing.push(async () => {
      await http.close();
      await store.close();
      await pool.end();
    });
    return { url: http.url, pool, executions: () => executions, arrivals: () => arrivals };
  }

  const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);
  const recordsOf = (key: string) => rowsWithKey(db.sql, records, key);
  const problemType = (text: string) => {
    try {
      return (JSON.parse(text) as { type?: string }).type;
    } catch {
      return text;
    }
  };
  const charge = (ctx: Koa.Context, tdb: Tdb) => tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
  const backendGone = (pid: number) => async () => (await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0].n === 0;

  return {
    get db() {
      return db;
    },
    get admin() {
      return admin;
    },
    get charges() {
      return charges;
    },
    get records() {
      return records;
    },
    get gated() {
      return gated;
    },
    start,
    chargesOf,
    recordsOf,
    problemType,
    charge,
    backendGone,
  };
}
