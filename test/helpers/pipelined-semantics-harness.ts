import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { idempotency, type IdempotencyOptions } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, DATABASE_URL, rowsWithKey, type TestDatabase } from './databases.js';
import { postJson, serve } from './http.js';

/**
 * What the attacks on the handler's queries in transactional mode over a pipelined pool share
 * (test/attacks/pipelined-handler-semantics-*.attack.test.ts): every scenario runs on a pipelined pool and on an
 * unpipelined one, and both must give the same answer (status, problem type) and commit the same writes. Pools
 * have max: 1, so the NEXT request always runs on the same connection.
 */

export let keySeq = 0;
export const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;
const server = POSTGRES_SERVER;

export type Handler = (ctx: Koa.Context, db: NonNullable<NonNullable<Koa.Context['idempotency']>['db']>) => Promise<void>;

/**
 * Opens the schema of one test file (named after `prefix`: charges, parents and kids with a deferred foreign
 * key), in the describe block that calls it. `db` and the tables' names are set once the block's beforeAll has run.
 */
export function pipelinedSemanticsHarness(prefix: string) {
  let db: TestDatabase;
  let charges: string;
  let records: string;
  let kids: string;
  let parents: string;
  const closing: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    db = await server.open(prefix);
    records = `"${db.schema}".idempotency_records`;
    charges = `"${db.schema}".charges`;
    kids = `"${db.schema}".kids`;
    parents = `"${db.schema}".parents`;
    await (await db.store()).migrate();
    await db.sql.query(`CREATE TABLE ${charges} (seq bigserial PRIMARY KEY, key text NOT NULL, n int NOT NULL, UNIQUE (key, n))`);
    await db.sql.query(`CREATE TABLE ${parents} (id int PRIMARY KEY)`);
    await db.sql.query(`CREATE TABLE ${kids} (key text NOT NULL, parent int REFERENCES ${parents} (id) DEFERRABLE INITIALLY DEFERRED)`);
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });
  afterAll(() => db?.close());

  async function start(pipeline: boolean, handler: Handler, options: Partial<IdempotencyOptions> = {}, applicationName?: string) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1, pipeline, application_name: applicationName });
    pool.on('error', () => undefined);
    const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0, lockTimeoutMs: 2_000 });
    let executions = 0;
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true, ...options }));
    app.use(async (ctx) => {
      executions++;
      await handler(ctx, ctx.idempotency!.db!);
    });
    const http = await serve(app);
    closing.push(async () => {
      await http.close();
      // A connection stuck by an attack must not hang the clean-up: its backend is ended first.
      if (applicationName) await db.sql.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [applicationName]);
      await store.close();
      await pool.end();
    });
    return { url: http.url, pool, executions: () => executions };
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

  /**
   * Runs the scenario (a failing first request through `handler`) on both pools; then a clean request on the
   * same (max: 1) connection. Returns what each pool answered.
   */
  async function bothPools(label: string, handler: Handler) {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, handler);
      const key = newKey(`${label}-${pipeline ? 'p' : 'u'}`);
      const answer = await postJson(app.url, { a: 1 }, { key });
      const next = newKey(`${label}-next`);
      const nextAnswer = await postJson(app.url, { a: 1 }, { key: next, headers: { 'x-clean': '1' } });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        charges: await chargesOf(key),
        records: await recordsOf(key),
        executions: app.executions(),
        nextStatus: nextAnswer.status,
        nextCharges: await chargesOf(next),
      };
    }
    return seen as { pipelined: Record<string, unknown>; unpipelined: Record<string, unknown> };
  }

  /** The clean request of bothPools: charges once and answers 201. */
  const clean = async (ctx: Koa.Context, tdb: Parameters<Handler>[1]) => {
    await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
    ctx.status = 201;
    ctx.body = { ok: true };
  };

  return {
    get db() {
      return db;
    },
    get charges() {
      return charges;
    },
    get records() {
      return records;
    },
    get kids() {
      return kids;
    },
    get parents() {
      return parents;
    },
    start,
    chargesOf,
    recordsOf,
    problemType,
    bothPools,
    clean,
  };
}
