import { createRequire } from 'node:module';
import pg from 'pg';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsWithKey } from '../helpers/databases.js';
import { chargingHandler, openChargesTable, postKeyed, serveKeyedApp, type ChargesTable, type ChargingHandler, type KeyedApp } from '../helpers/keyed-requests.js';
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
let charges: string;
let admin: pg.Pool;
beforeAll(async () => {
  table = await openChargesTable('s9_pg_instr');
  ({ charges, admin } = table);
});
afterAll(() => table.close());

let seq = 0;
const cases = [false, true].flatMap((pipeline) =>
  [true, false].flatMap((preparedStatements) => [false, true].map((transactional) => ({ pipeline, preparedStatements, transactional }))),
);

describe.each(cases)('instrumentation-pg with sqlcommenter: %o', ({ pipeline, preparedStatements, transactional }) => {
  let app: KeyedApp;
  let charging: ChargingHandler;
  let pool: pg.Pool;
  beforeAll(async () => {
    charging = chargingHandler(table, transactional);
    app = await serveKeyedApp(table, { transactional, pool: { max: 3, pipeline }, store: { preparedStatements } }, charging.middleware);
    pool = app.pool;
  });
  afterAll(() => app?.close());

  const post = (key: string) => postKeyed(app.url, key);

  it('the instrumentation is in place', () => {
    expect((pg.Client.prototype.query as unknown as { __wrapped?: boolean }).__wrapped).toBe(true);
  });

  it('first runs once, the retry replays, no pooled client leaked', async () => {
    const key = `s9-instr-${++seq}-${Date.now()}`;
    const before = charging.executions;
    const first = await post(key);
    const second = await post(key);
    expect({ first: first.status, second: second.status, replayed: second.replayed }, first.text).toEqual({ first: 201, second: 201, replayed: 'true' });
    expect(charging.executions - before).toBe(1);
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
    expect({ waiting: pool.waitingCount, busy: pool.totalCount - pool.idleCount }).toEqual({ waiting: 0, busy: transactional ? 0 : pool.totalCount - pool.idleCount });
  });
});
