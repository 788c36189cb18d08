import net from 'node:net';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type IdempotencyOptions } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on a response the handler took out of Koa's hands, then a failure, with HTTP/1.1 keep-alive
 * and a second request pipelined on the same connection. In lease mode the first answer goes out as written and
 * the second request is answered on the same connection. In transactional mode the connection is cut: the second
 * request gets no answer, but it must not be lost either way: its key is committed once (a retry gets the replay)
 * or free (a retry runs it once). Neither request may hang the connection.
 */

const BODY = '{"amount":1}';
let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

function request(key: string, close: boolean): string {
  const lines = ['POST /orders HTTP/1.1', 'Host: 127.0.0.1', `Idempotency-Key: ${key}`, 'Content-Type: application/json', `Content-Length: ${BODY.length}`];
  if (close) lines.push('Connection: close');
  return `${lines.join('\r\n')}\r\n\r\n${BODY}`;
}

/** Writes both requests in one packet and reads until the server closes, or the bound: the raw bytes. */
function pipelined(port: number, first: string, second: string): Promise<{ raw: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.write(first + second));
    const finish = (timedOut: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ raw: Buffer.concat(chunks).toString('latin1'), timedOut });
    };
    const timer = setTimeout(() => finish(true), 3_000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => finish(false));
  });
}

const statuses = (raw: string) => [...raw.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((match) => Number(match[1]));

describe('a response out of Koa’s hands, a failure, and a second request pipelined on the connection', () => {
  let db: TestDatabase;
  let store: PostgresStore;
  let orders: string;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_pipelined_cut');
    orders = `"${db.schema}".orders`;
    await db.sql.query(`CREATE TABLE ${orders} (key text NOT NULL)`);
    store = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  /** The first request's handler writes around Koa and fails after; every other request is a plain 201. */
  async function start(options: Partial<IdempotencyOptions>, failing: string, writeAround: (ctx: Koa.Context) => Promise<void>) {
    const executions = new Map<string, number>();
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, ...options }));
    app.use(async (ctx) => {
      const key = ctx.idempotency!.key;
      executions.set(key, (executions.get(key) ?? 0) + 1);
      if (ctx.idempotency!.db) await ctx.idempotency!.db.query(`INSERT INTO ${orders} (key) VALUES ($1)`, [key]);
      if (key === failing) return writeAround(ctx);
      ctx.status = 201;
      ctx.body = { key };
    });
    const http = await serve(app);
    closing.push(() => http.close());
    return { url: http.url, port: Number(new URL(http.url).port), executions };
  }

  it('lease mode, shouldStore throws after the handler flushed its 201 head: both answers arrive on the connection, no hang', async () => {
    const failing = newKey('lease-first');
    const second = newKey('lease-second');
    let calls = 0;
    const shouldStore = () => {
      // Fails for the first request only.
      if (++calls === 1) throw new Error('shouldStore failed');
      return true;
    };
    const { port } = await start({ shouldStore }, failing, async (ctx) => {
      ctx.status = 201;
      ctx.set('Content-Length', '5');
      ctx.res.flushHeaders();
      ctx.body = 'hello';
    });
    const answer = await pipelined(port, request(failing, false), request(second, true));
    expect({ timedOut: answer.timedOut, statuses: statuses(answer.raw) }).toEqual({ timedOut: false, statuses: [201, 201] });
  });

  it('transactional mode, the first handler’s transaction aborted after it flushed its head: the cut loses no committed work, and the second key is run once in all', async () => {
    const failing = newKey('tx-first');
    const second = newKey('tx-second');
    const { url, port } = await start({ transactional: true }, failing, async (ctx) => {
      await ctx.idempotency!.db!.query('SELECT 1/0').catch(() => undefined);
      ctx.status = 201;
      ctx.set('Content-Length', '5');
      ctx.res.flushHeaders();
      ctx.body = 'hello';
    });
    const answer = await pipelined(port, request(failing, false), request(second, true));
    expect(answer.timedOut).toBe(false);
    // The second request's client saw no answer (or its answer): it retries with the same key.
    const retry = await postJson(`${url}/orders`, JSON.parse(BODY), { key: second });
    expect({
      retry: retry.status,
      firstCommitted: await rowsWithKey(db.sql, orders, failing),
      secondCommitted: await rowsWithKey(db.sql, orders, second),
    }).toEqual({ retry: 201, firstCommitted: 0, secondCommitted: 1 });
  });
});
