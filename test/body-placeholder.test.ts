import { randomUUID } from 'node:crypto';
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, FINGERPRINT_VERSION, idempotency, problemType } from '../src/index.js';
import { type PostgresStore } from '../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { serve } from './helpers/http.js';

/**
 * A body parser's `{}` is not always a body: @koa/bodyparser and koa-body leave `ctx.request.body = {}` for a
 * media type they do not parse, without reading it. The fingerprint takes the raw bytes whenever they are
 * kept, and a `{}` without them only when a parser read a JSON body to its end.
 */

/** Buffers every body into `ctx.request.rawBody` that the parser before it left unread, as the README advises. */
const keepUnreadBytes: Koa.Middleware = async (ctx, next) => {
  if (!ctx.req.readableEnded && ctx.request.length) {
    const chunks: Buffer[] = [];
    for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
    (ctx.request as { rawBody?: unknown }).rawBody = Buffer.concat(chunks);
  }
  await next();
};

describe.each(databaseTargets())('the fingerprint of a body behind a parser placeholder, on $name', (target) => {
  let db: TestDatabase;
  let store: PostgresStore;

  beforeAll(async () => {
    db = await target.open('body_placeholder');
    store = await db.store({ replayCacheEntries: 0 });
  });
  afterAll(() => db?.close());

  /** `parsers` in front of the middleware, and a handler that counts its runs. */
  async function withApp(parsers: Koa.Middleware[], run: (post: (key: string, type: string, body: string) => Promise<Response>) => Promise<void>) {
    const app = new Koa();
    app.silent = true;
    for (const parser of parsers) app.use(parser);
    app.use(idempotency({ store }));
    app.use((ctx) => {
      ctx.status = 201;
      ctx.body = { charged: true };
    });
    const server = await serve(app);
    try {
      await run((key, type, body) => fetch(`${server.url}/charges`, { method: 'POST', headers: { 'idempotency-key': key, 'content-type': type }, body }));
    } finally {
      await server.close();
    }
  }

  it.each([
    ['text/plain body', 'amount=10 to=alice', 'amount=99 to=mallory'],
    ['form body the parser is not set to parse', 'amount=10&to=alice', 'amount=99&to=mallory'],
  ])('answers 422, not the first replay, to a different %s, kept in rawBody behind the {} placeholder', async (_label, first, second) => {
    const type = first.includes('&') ? 'application/x-www-form-urlencoded' : 'text/plain';
    await withApp([bodyParser({ enableTypes: ['json'] }), keepUnreadBytes], async (post) => {
      const key = randomUUID();
      expect((await post(key, type, first)).status).toBe(201);
      const other = await post(key, type, second);
      expect(other.headers.get('idempotent-replayed')).toBeNull();
      expect(other.status).toBe(422);
      const retry = await post(key, type, first);
      expect([retry.status, retry.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
    });
  });

  it('accepts a genuine JSON {} that koa-body parsed without keeping its bytes, replays it, and refuses another body under its key', async () => {
    await withApp([koaBody()], async (post) => {
      const key = randomUUID();
      const first = await post(key, 'application/json', '{}');
      expect(first.status).toBe(201);
      const retry = await post(key, 'application/json', ' { } ');
      expect([retry.status, retry.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
      expect((await post(key, 'application/json', '{"amount":99}')).status).toBe(422);
    });
  });

  it('still refuses, with 415, the {} koa-body leaves for a body it did not read', async () => {
    await withApp([koaBody()], async (post) => {
      const answer = await post(randomUUID(), 'application/octet-stream', 'amount=10');
      expect(answer.status).toBe(415);
      expect(((await answer.json()) as { type: string }).type).toBe(problemType('bodyNotRead'));
    });
  });

  it('keeps the version 1 fingerprint of a JSON {} that @koa/bodyparser parsed and kept raw', async () => {
    await withApp([bodyParser()], async (post) => {
      const key = randomUUID();
      expect((await post(key, 'application/json', '{ }')).status).toBe(201);
      const expected = fingerprint({ method: 'POST', path: '/charges', querystring: '', headers: {}, body: {}, mediaType: 'application/json' });
      // The version 1 fingerprint is the stored column's first word; the per-part digests of a 422's differences follow it.
      const record = await store.find('', key);
      expect([record?.fingerprint.split(' ')[0], record?.fingerprintVersion]).toEqual([expected, FINGERPRINT_VERSION]);
    });
  });
});
