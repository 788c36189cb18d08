import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/** Raw bodies kept in ctx.request.rawBody (as a Buffer or a latin1 string): bytes count, identical retries replay. */
let server: Awaited<ReturnType<typeof serve>>;
let db: TestDatabase;

beforeAll(async () => {
  db = await POSTGRES_SERVER.open('s8_raw_bytes');
  const app = new Koa();
  app.silent = true;
  app.use(bodyParser({ enableTypes: ['json'] }));
  app.use(async (ctx, next) => {
    if (!ctx.is('application/octet-stream', 'application/x-latin1')) return next();
    const chunks: Buffer[] = [];
    for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
    const bytes = Buffer.concat(chunks);
    (ctx.request as { rawBody?: unknown }).rawBody = ctx.is('application/x-latin1') ? bytes.toString('latin1') : bytes;
    return next();
  });
  app.use(idempotency({ store: await db.store(), scope: () => 'acct' }));
  app.use((ctx) => void ((ctx.status = 201), (ctx.body = { ok: true })));
  server = await serve(app);
});
afterAll(async () => {
  await server?.close();
  await db?.close();
});

let seq = 0;
async function post(key: string, type: string, body: Uint8Array) {
  const response = await fetch(`${server.url}/op`, { method: 'POST', headers: { 'content-type': type, 'idempotency-key': key }, body });
  const text = await response.text();
  return { status: response.status, replayed: response.headers.get('idempotent-replayed'), text };
}

describe.each(['application/octet-stream', 'application/x-latin1'])('raw bodies as %s', (type) => {
  const a = new Uint8Array([0xe9, 0x00, 0xff, 0xd8, 0x3d]);
  const b = new Uint8Array([0xe8, 0x00, 0xff, 0xd8, 0x3d]);
  it('identical retry replays', async () => {
    const key = `s8-raw-${++seq}-${Date.now()}`;
    expect((await post(key, type, a)).status).toBe(201);
    const again = await post(key, type, a);
    expect({ status: again.status, replayed: again.replayed }).toEqual({ status: 201, replayed: 'true' });
  });
  it('one byte different: 422 naming the body', async () => {
    const key = `s8-raw-${++seq}-${Date.now()}`;
    expect((await post(key, type, a)).status).toBe(201);
    const again = await post(key, type, b);
    expect(again.status).toBe(422);
    expect((JSON.parse(again.text) as { differences: unknown }).differences).toEqual({ parts: ['body'] });
  });
  it('three spaces vs a newline (bytes that differ): 422', async () => {
    const key = `s8-raw-${++seq}-${Date.now()}`;
    expect((await post(key, type, new TextEncoder().encode('   '))).status).toBe(201);
    const again = await post(key, type, new TextEncoder().encode('\n'));
    expect(again.status).toBe(422);
  });
  // README: "beside raw bytes the bytes count"; a non-JSON body's bytes `{}` are not an empty body.
  it('empty vs {} bytes', async () => {
    const key = `s8-raw-${++seq}-${Date.now()}`;
    expect((await post(key, type, new Uint8Array())).status).toBe(201);
    const again = await post(key, type, new TextEncoder().encode('{}'));
    expect(again.status).toBe(422);
  });
});
