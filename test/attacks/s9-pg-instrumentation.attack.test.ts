import { createRequire } from 'node:module';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, rowsWithKey } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';
import { openChargesTable, postKeyed, type ChargesTable } from '../helpers/keyed-requests.js';
import { registerTracerProvider } from '../helpers/otel-sdk.js';

/**
 * The store now hands node-postgres its own `Query` objects. @opentelemetry/instrumentation-pg patches
 * pg.Client.prototype.query; with `addSqlCommenterCommentToQueries` it replaces a query object without a name by a
 * spread copy `{ ...arg0, text: text + comment }` (a plain object, no `submit`), and with
 * `enableTraceContextPropagation` it sends a `SET application_name` before each query. Every combination of
 * pipelined / prepared statements / mode must still answer, once, without hanging or leaking a pooled client.
 */
registerTracerProvider({ spanProcessors: [] });
registerInstrumentations({ instrumentations: [new PgInstrumentation({ addSqlCommenterCommentToQueries: true, enableTraceContextPropagation: true })] });
createRequire(import.meta.url)('pg');

let table: ChargesTable;
let schema: string;
let charges: string;
let admin: pg.Pool;
beforeAll(async () => {
  table = await openChargesTable('s9_pg_instr');
  ({ schema, charges, admin } = table);
});
afterAll(() => table.close());

let seq = 0;
const cases = [false, true].flatMap((pipeline) =>
  [true, false].flatMap((preparedStatements) => [false, true].map((transactional) => ({ pipeline, preparedStatements, transactional }))),
);

describe.each(cases)('instrumentation-pg with sqlcommenter: %o', ({ pipeline, preparedStatements, transactional }) => {
  let pool: pg.Pool;
  let store: PostgresStore;
  let server: Awaited<ReturnType<typeof serve>>;
  let executions = 0;
  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 3, pipeline });
    pool.on('error', () => undefined);
    store = new PostgresStore({ pool, schema, preparedStatements, replayCacheEntries: 0 });
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional, scope: () => 'acct' }));
    app.use(async (ctx) => {
      executions++;
      if (transactional) await ctx.idempotency!.db!.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [ctx.idempotency!.key]);
      else await admin.query(`INSERT INTO ${charges} (key) VALUES ($1)`, [ctx.idempotency!.key]);
      ctx.status = 201;
      ctx.body = { key: ctx.idempotency!.key };
    });
    server = await serve(app);
  });
  afterAll(async () => {
    await server?.close();
    await store?.close();
    await pool?.end();
  });

  const post = (key: string) => postKeyed(`${server.url}/op`, key);

  it('the instrumentation is in place', () => {
    expect((pg.Client.prototype.query as unknown as { __wrapped?: boolean }).__wrapped).toBe(true);
  });

  it('first runs once, the retry replays, no pooled client leaked', async () => {
    const key = `s9-instr-${++seq}-${Date.now()}`;
    const before = executions;
    const first = await post(key);
    const second = await post(key);
    expect({ first: first.status, second: second.status, replayed: second.replayed }, first.text).toEqual({ first: 201, second: 201, replayed: 'true' });
    expect(executions - before).toBe(1);
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
    expect({ waiting: pool.waitingCount, busy: pool.totalCount - pool.idleCount }).toEqual({ waiting: 0, busy: transactional ? 0 : pool.totalCount - pool.idleCount });
  });
});
