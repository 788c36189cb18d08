import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';
import { buildRequest, rawRequest } from '../helpers/raw-http.js';

/**
 * Black-box attack on a problem answered after the handler ran (shouldStore throws, or the transaction the
 * handler used was aborted) when the handler wrote around Koa: it flushed the response head itself, or set
 * `ctx.respond = false` and writes the response later (a proxy does, once its upstream answers). Koa sends
 * neither status nor headers of such a response any more, yet the middleware still writes its problem into it:
 * the problem's bytes went out under the handler's head (201, `Content-Length: 5`, then 357 bytes: the client
 * reads `{"typ` and the rest is left on the connection), and the problem's `Content-Length: 357` went out in
 * front of the handler's own 5-byte body (the client waits for bytes that never come). The wire must stay
 * what the handler wrote: well framed, never the problem's bytes under the handler's head, never a hang.
 */

const REQUEST_BODY = '{"amount":1}';
let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('a problem after a handler that wrote around Koa', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_written_head');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  /** An app whose outer middleware runs `ctx.state.afterChain` (if set) once the chain, and the middleware, returned. */
  async function start(options: Partial<IdempotencyOptions>, handler: Koa.Middleware) {
    const app = new Koa();
    app.silent = true;
    app.use(async (ctx, next) => {
      await next();
      (ctx.state as { afterChain?: () => void }).afterChain?.();
    });
    app.use(bodyParser());
    app.use(idempotency({ store: postgres, ...options }));
    app.use(handler);
    const http = await serve(app);
    closing.push(() => http.close());
    return Number(new URL(http.url).port);
  }

  function send(port: number, label: string) {
    const request = buildRequest({
      path: '/orders',
      headerLines: [`Idempotency-Key: ${newKey(label)}`, 'Content-Type: application/json', `Content-Length: ${REQUEST_BODY.length}`],
      body: REQUEST_BODY,
    });
    return rawRequest(port, request, 5_000);
  }

  const failingShouldStore: Partial<IdempotencyOptions> = {
    shouldStore: () => {
      throw new Error('shouldStore failed');
    },
  };

  /** A transactional handler whose statement failed inside the claim's transaction: 500 request-failed after it ran. */
  async function abortTransaction(ctx: Koa.Context): Promise<void> {
    await ctx.idempotency!.db!.query('SELECT 1/0').catch(() => undefined);
  }

  it('shouldStore throws (lease mode: the handler’s writes stand) after the handler flushed its head (201, Content-Length 5): the client gets the handler’s answer, no problem bytes under that head', async () => {
    const port = await start(failingShouldStore, (ctx) => {
      ctx.status = 201;
      ctx.set('Content-Type', 'text/plain');
      ctx.set('Content-Length', '5');
      ctx.res.flushHeaders();
      ctx.body = 'hello';
    });
    const answer = await send(port, 'flushed');
    expect({ status: answer.status, timedOut: answer.timedOut, declared: Number(answer.headers['content-length']), body: answer.body }).toEqual({
      status: 201,
      timedOut: false,
      declared: 5,
      body: 'hello',
    });
  });

  it('shouldStore throws (lease mode: the handler’s writes stand) after the handler set ctx.respond = false and writes its 201 later: the client gets that 201 whole, no hang', async () => {
    const port = await start(failingShouldStore, (ctx) => {
      ctx.respond = false;
      (ctx.state as { afterChain?: () => void }).afterChain = () => {
        ctx.res.statusCode = 201;
        ctx.res.end('later');
      };
    });
    const answer = await send(port, 'respond-false');
    // A client that trusts Content-Length (fetch) waits for the declared bytes: a declared length over 5 hangs it.
    const declared = Number(answer.headers['content-length']);
    expect({ status: answer.status, declared, type: answer.headers['content-type'], body: answer.body }).toEqual({
      status: 201,
      declared: 5,
      type: undefined,
      body: 'later',
    });
  });

  /**
   * In transactional mode the failure rolled the handler's writes back: its 201 would tell the client they were
   * done. The connection is cut instead, so the client sees no complete answer and retries.
   */
  it('the handler’s transaction was aborted after it flushed its head: the connection is cut before the body, no problem bytes under that head', async () => {
    const port = await start({ transactional: true }, async (ctx) => {
      await abortTransaction(ctx);
      ctx.status = 201;
      ctx.set('Content-Type', 'text/plain');
      ctx.set('Content-Length', '5');
      ctx.res.flushHeaders();
      ctx.body = 'hello';
    });
    const answer = await send(port, 'flushed-tx');
    expect({ status: answer.status, timedOut: answer.timedOut, body: answer.body }).toEqual({ status: 201, timedOut: false, body: '' });
  });

  it('the handler’s transaction was aborted after it set ctx.respond = false: the connection is cut, no answer at all, no hang', async () => {
    const port = await start({ transactional: true }, async (ctx) => {
      await abortTransaction(ctx);
      ctx.respond = false;
      (ctx.state as { afterChain?: () => void }).afterChain = () => {
        ctx.res.statusCode = 201;
        ctx.res.end('later');
      };
    });
    const answer = await send(port, 'respond-false-tx');
    expect({ status: answer.status, timedOut: answer.timedOut }).toEqual({ status: 0, timedOut: false });
  });
});
