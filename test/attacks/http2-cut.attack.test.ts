import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';

/**
 * Black-box attack on the connection cut of transactional mode (a failure after a handler that flushed its head:
 * nothing was committed, so the middleware destroys `ctx.req.socket` "so the client retries instead of believing
 * the writes done") when the Koa app is served over HTTP/2 (`http2.createServer(app.callback())`, Node's
 * compatibility API, which Koa supports). There `ctx.req.socket` is a proxy whose destroy() ends the request's
 * stream, and the client sees the stream end normally: a complete 201 with an empty body, while nothing was
 * committed. The client must see the stream reset or errored, never a complete 2xx.
 */

const BODY = '{"amount":1}';

interface H2Answer {
  status: number;
  body: string;
  /** The stream ended normally (END_STREAM): the client holds a complete response. */
  complete: boolean;
  error?: string;
}

function post(session: http2.ClientHttp2Session, key: string): Promise<H2Answer> {
  return new Promise((resolve) => {
    const stream = session.request({ ':method': 'POST', ':path': '/orders', 'content-type': 'application/json', 'idempotency-key': key });
    let status = 0;
    let body = '';
    let complete = false;
    let error: string | undefined;
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
    stream.on('end', () => (complete = true));
    stream.on('error', (cause: Error & { code?: string }) => (error = cause.code ?? cause.message));
    stream.on('close', () => resolve({ status, body, complete: complete && stream.rstCode === http2.constants.NGHTTP2_NO_ERROR && !error, error }));
    stream.end(BODY);
  });
}

describe('transactional mode over HTTP/2: the cut after a flushed head', () => {
  let db: TestDatabase;
  let store: PostgresStore;
  let orders: string;
  let server: http2.Http2Server;
  let session: http2.ClientHttp2Session;

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_http2_cut');
    orders = `"${db.schema}".orders`;
    await db.sql.query(`CREATE TABLE ${orders} (key text NOT NULL)`);
    store = await db.store();
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true }));
    app.use(async (ctx) => {
      const db = ctx.idempotency!.db!;
      await db.query(`INSERT INTO ${orders} (key) VALUES ($1)`, [ctx.idempotency!.key]);
      // A statement that failed, caught without a savepoint: the transaction is aborted, nothing will commit.
      await db.query('SELECT 1/0').catch(() => undefined);
      ctx.status = 201;
      ctx.type = 'application/json';
      ctx.res.flushHeaders();
      ctx.body = { order: 'created' };
    });
    const callback = app.callback();
    server = http2.createServer((req, res) => void callback(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    session.on('error', () => undefined);
  });
  afterAll(async () => {
    session?.close();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await db?.close();
  });

  it('the transaction was aborted after the handler flushed its 201 head: the stream is reset, not ended as a complete 201', async () => {
    const key = `h2-${Date.now()}`;
    const answer = await post(session, key);
    const committed = await rowsWithKey(db.sql, orders, key);
    // What happens now: { committed: 0, status: 201, completeResponse: true }: a complete, empty 201.
    expect({ committed, status: answer.status, completeResponse: answer.complete }).toEqual({ committed: 0, status: 201, completeResponse: false });
  });
});
