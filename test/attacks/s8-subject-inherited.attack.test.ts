import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, MemoryStore } from '../../src/index.js';
import { serve } from '../helpers/http.js';

/**
 * The problem subject (key, correlation ID) now lives under a symbol property on ctx. A property is read through
 * the prototype chain (ctx -> app.context), where the WeakMap keyed by the context never looked. An outer
 * middleware that copies a finished request's own properties onto app.context ("sticky defaults", a common
 * Object.assign pattern) copies the enumerable symbol too: every later request inherits request A's subject.
 * A later request whose problem is answered before its own subject is noted (a malformed key) then names
 * request A's key and correlation ID.
 */
const KEY_A = 'tenant-a-secret-key-0001';
let server: Awaited<ReturnType<typeof serve>>;

beforeAll(async () => {
  const app = new Koa();
  app.silent = true;
  app.use(async (ctx, next) => {
    await next();
    // Copies the request's own enumerable properties but Koa's objects (object rest, like Object.assign, takes enumerable symbols too).
    const { request: _r, response: _s, app: _a, req: _q, res: _p, originalUrl: _o, state: _st, ...rest } = ctx as unknown as Record<string | symbol, unknown>;
    if (ctx.path === '/remember') Object.assign(app.context, rest);
  });
  app.use(bodyParser({ enableTypes: ['json'] }));
  app.use(idempotency({ store: new MemoryStore(), scope: (ctx) => ctx.get('x-account'), includeKeyInProblems: true }));
  app.use((ctx) => void ((ctx.status = 201), (ctx.body = { ok: true })));
  server = await serve(app);
});
afterAll(() => server?.close());

async function post(path: string, headers: Record<string, string>, body: string) {
  const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: response.status, text: await response.text() };
}

describe('problem subject stored as a symbol property on ctx', () => {
  it("another account's problem never names request A's key or correlation ID", async () => {
    const first = await post('/remember', { 'x-account': 'tenant-a', 'idempotency-key': KEY_A }, '{"amount":1}');
    expect(first.status).toBe(201);
    // Tenant B: a malformed (quoted, never closed) key: 400 key-invalid, answered before B's subject is noted.
    const other = await post('/op', { 'x-account': 'tenant-b', 'idempotency-key': '"unterminated' }, '{}');
    expect(other.status).toBe(400);
    expect(other.text).not.toContain(KEY_A);
  });

  it("two unrelated problems without a correlation ID of their own are not tagged alike (request A's correlation tag)", async () => {
    expect((await post('/remember', { 'x-account': 'tenant-a', 'idempotency-key': `${KEY_A}-2` }, '{"amount":1}')).status).toBe(201);
    const tag = async (account: string) => {
      const answer = await post('/op', { 'x-account': account, 'idempotency-key': '"unterminated' }, '{}');
      expect(answer.status).toBe(400);
      // urn:uuid:xxxxxxxx-xxxx-...: a version-8 UUID's first 12 hex digits are the correlation tag; a v4 is random.
      const instance = (JSON.parse(answer.text) as { instance: string }).instance;
      return instance.slice('urn:uuid:'.length, 'urn:uuid:'.length + 13);
    };
    const [b, c] = [await tag('tenant-b'), await tag('tenant-c')];
    expect(b).not.toBe(c);
  });
});
