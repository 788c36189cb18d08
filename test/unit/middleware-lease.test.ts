import { afterEach, describe, expect, it } from 'vitest';
import { IdempotencyConfigError, MemoryStore, problemType, type IdempotencyOptions } from '../../src/index.js';
import { createTestApp, type TestAppOptions } from '../helpers/app.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * The middleware's lease-mode lifecycle on MemoryStore, without a database: the quick loop of `npm run test:unit`.
 * The same behaviours on Postgres and PGlite, and transactional mode, are in test/middleware-*.test.ts (db tier).
 */
describe('idempotency middleware in lease mode, on MemoryStore', () => {
  const servers: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((server) => server.close()));
  });

  async function start(options: Partial<IdempotencyOptions> = {}, respond?: TestAppOptions['respond']) {
    const { app, executions } = createTestApp({ store: new MemoryStore(), options, respond });
    const server = await serve(app);
    servers.push(server);
    return { url: `${server.url}/orders`, executions };
  }

  it('replays the stored response byte for byte with Idempotent-Replayed, without running the handler again', async () => {
    const { url, executions } = await start();
    const first = await postJson(url, { amount: 5 }, { key: 'replay', account: 'a' });
    const retry = await postJson(url, { amount: 5 }, { key: 'replay', account: 'a' });
    expect([first.status, retry.status, retry.text, retry.headers.get('location')]).toEqual([201, 201, first.text, '/orders/1']);
    expect([first.headers.get('idempotent-replayed'), retry.headers.get('idempotent-replayed')]).toEqual([null, 'true']);
    expect(executions).toHaveLength(1);
  });

  it('answers 422 key-reused to the same key with another body, and keeps the keys of two accounts apart', async () => {
    const { url, executions } = await start();
    await postJson(url, { amount: 5 }, { key: 'reuse', account: 'a' });
    const reused = await postJson(url, { amount: 6 }, { key: 'reuse', account: 'a' });
    expect([reused.status, JSON.parse(reused.text).type]).toEqual([422, problemType('keyReused')]);
    expect((await postJson(url, { amount: 6 }, { key: 'reuse', account: 'b' })).status).toBe(201);
    expect(executions).toHaveLength(2);
  });

  it('answers 409 request-in-progress with Retry-After while the first request runs, then replays it', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const running = new Promise<void>((resolve) => (entered = resolve));
    const { url } = await start({}, async (ctx) => {
      entered();
      await held;
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    const first = postJson(url, { amount: 5 }, { key: 'busy', account: 'a' });
    await running;
    const duplicate = await postJson(url, { amount: 5 }, { key: 'busy', account: 'a' });
    expect([duplicate.status, JSON.parse(duplicate.text).type]).toEqual([409, problemType('inProgress')]);
    expect(Number(duplicate.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    release();
    expect((await first).status).toBe(201);
    expect((await postJson(url, { amount: 5 }, { key: 'busy', account: 'a' })).headers.get('idempotent-replayed')).toBe('true');
  });

  it('runs 20 concurrent identical requests exactly once', async () => {
    const { url, executions } = await start();
    const answers = await Promise.all(Array.from({ length: 20 }, () => postJson(url, { amount: 5 }, { key: 'burst', account: 'a' })));
    expect(executions).toHaveLength(1);
    expect(answers.every((answer) => answer.status === 201 || answer.status === 409)).toBe(true);
  });

  it('frees the key when the handler throws, so the same key runs again at once', async () => {
    const { url, executions } = await start({}, (ctx, execution) => {
      if (execution === 1) throw new Error('the handler failed');
      ctx.status = 201;
    });
    expect((await postJson(url, { amount: 5 }, { key: 'thrown', account: 'a' })).status).toBe(500);
    expect((await postJson(url, { amount: 5 }, { key: 'thrown', account: 'a' })).status).toBe(201);
    expect(executions).toHaveLength(2);
  });

  it('answers 400 key-missing when a key is required and none was sent', async () => {
    const { url, executions } = await start({ required: true });
    const missing = await postJson(url, { amount: 5 }, { account: 'a' });
    expect([missing.status, JSON.parse(missing.text).type, executions.length]).toEqual([400, problemType('keyMissing'), 0]);
  });

  it('refuses transactional mode at construction (MemoryStore has no transactions), rather than answer every request 503', async () => {
    await expect(start({ transactional: true })).rejects.toThrow(IdempotencyConfigError);
  });
});
