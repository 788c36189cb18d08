import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency, MemoryStore, problemType } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { postJson, serve } from '../helpers/http.js';
import { buildRequest, rawRequest } from '../helpers/raw-http.js';

/**
 * Black-box attack on the problems the middleware answers after the handler ran (answers.ts): the handler's
 * response is replaced by a problem, so the headers that described the handler's representation must not
 * stay on it. A `Content-Encoding: gzip` left on the problem's JSON made it unreadable (a client decodes the
 * body as gzip and fails), and a `Location` pointed at a resource whose creation was not kept.
 */

describe('a problem answered after the handler ran carries none of the handler’s representation headers', () => {
  const servers: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((server) => server.close()));
  });

  it('the outer middleware’s headers (CORS) stay on that problem', async () => {
    const app = new Koa();
    app.silent = true;
    app.use(async (ctx, next) => {
      ctx.set('Access-Control-Allow-Origin', 'https://app.example');
      await next();
    });
    app.use(bodyParser());
    app.use(idempotency({ store: new MemoryStore() }));
    app.use((ctx) => {
      ctx.status = 201;
      ctx.set('Access-Control-Allow-Origin', 'https://handler.example');
      ctx.body = { id: 1n };
    });
    const server = await serve(app);
    servers.push(server);
    const answer = await postJson(`${server.url}/orders`, { amount: 1 }, { key: 'bigint-cors' });
    expect({ status: answer.status, origin: answer.headers.get('access-control-allow-origin') }).toEqual({ status: 500, origin: 'https://app.example' });
  });

  it('500 request-failed for a body JSON cannot serialise (a BigInt): no Content-Encoding, Location or ETag of the handler, a readable problem', async () => {
    const respond = (ctx: Koa.Context) => {
      ctx.status = 201;
      ctx.set('Content-Encoding', 'gzip');
      ctx.set('Location', '/orders/1');
      ctx.set('ETag', '"v1"');
      ctx.body = { id: 1n };
    };
    const { app, executions } = createTestApp({ store: new MemoryStore(), respond });
    const server = await serve(app);
    servers.push(server);
    const body = '{"amount":1}';
    const request = buildRequest({
      path: '/orders',
      headerLines: ['Idempotency-Key: bigint-body', 'Authorization: Bearer a', 'Content-Type: application/json', `Content-Length: ${body.length}`],
      body,
    });
    const answer = await rawRequest(Number(new URL(server.url).port), request, 5_000);
    expect(executions).toHaveLength(1);
    expect({ status: answer.status, type: answer.headers['content-type'] }).toEqual({ status: 500, type: 'application/problem+json' });
    expect({
      'content-encoding': answer.headers['content-encoding'],
      location: answer.headers.location,
      etag: answer.headers.etag,
    }).toEqual({ 'content-encoding': undefined, location: undefined, etag: undefined });
    expect((JSON.parse(answer.body) as { type: string }).type).toBe(problemType('requestFailed'));
  });
});
