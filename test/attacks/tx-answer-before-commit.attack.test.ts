import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';
import { buildRequest, rawRequest } from '../helpers/raw-http.js';

/**
 * Black-box attack on transactional mode when the handler takes its response out of Koa's hands: a handler that
 * throws after flushing its head left the connection open forever under a 2xx head (Koa's onerror returns without
 * ending it), nothing committed. It must be cut. (A response already complete on the wire, a flushed 204 or one the
 * handler ended itself, cannot be taken back by any cut: the README's limits of transactional mode.)
 */

const REQUEST_BODY = '{"amount":1}';
let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('transactional mode: a response out of Koa’s hands, then nothing committed', () => {
  let db: TestDatabase;
  let store: PostgresStore;
  let orders: string;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_tx_answer_first');
    orders = `"${db.schema}".orders`;
    // A deferred unique constraint: checked at COMMIT, so Postgres refuses the COMMIT after the handler returned.
    await db.sql.query(`CREATE TABLE ${orders} (key text NOT NULL, ref int NOT NULL, CONSTRAINT one_ref UNIQUE (ref) DEFERRABLE INITIALLY DEFERRED)`);
    await db.sql.query(`INSERT INTO ${orders} (key, ref) VALUES ('seed', 7)`);
    store = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  async function start(handler: Koa.Middleware) {
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true }));
    app.use(handler);
    const http = await serve(app);
    closing.push(() => http.close());
    return Number(new URL(http.url).port);
  }

  function send(port: number, key: string) {
    const request = buildRequest({
      path: '/orders',
      headerLines: [`Idempotency-Key: ${key}`, 'Content-Type: application/json', `Content-Length: ${REQUEST_BODY.length}`],
      body: REQUEST_BODY,
    });
    return rawRequest(port, request, 3_000);
  }

  it('the handler flushes a 201 head, then throws: the connection is cut, not left open under the 2xx head', async () => {
    const port = await start(async (ctx) => {
      await ctx.idempotency!.db!.query(`INSERT INTO ${orders} (key, ref) VALUES ($1, 2)`, [ctx.idempotency!.key]);
      ctx.status = 201;
      ctx.set('Content-Type', 'text/plain');
      ctx.set('Content-Length', '5');
      ctx.res.flushHeaders();
      throw new Error('failed after the head');
    });
    const key = newKey('throw-after-head');
    const answer = await send(port, key);
    const committed = await rowsWithKey(db.sql, orders, key);
    // What happens now: { committed: 0, status: 201, timedOut: true }: the connection hangs under the 201 head.
    expect({ committed, status: answer.status, timedOut: answer.timedOut }).toEqual({ committed: 0, status: 201, timedOut: false });
  });
});
