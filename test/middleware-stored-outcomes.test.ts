import { Readable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { problemType, type Completion, type IdempotencyStore, type Lease } from '../src/index.js';
import { createTestApp } from './helpers/app.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { middlewareHarness, newKey } from './helpers/middleware-harness.js';

/** Which outcomes the middleware stores, how it completes them, and the responses it cannot replay (test/helpers/middleware-harness.ts). */
describe.each(databaseTargets())('idempotency middleware on $name', (target) => {
  const middleware = middlewareHarness(target, 'middleware_outcomes');
  const { servers, start } = middleware;
  let db: TestDatabase;
  beforeAll(() => {
    ({ db } = middleware);
  });

  describe('outcomes that are not stored', () => {
    it('releases the key after a 5xx so the retry runs', async () => {
      const { url, executions } = await start({}, (ctx, n) => {
        ctx.status = n === 1 ? 503 : 201;
        ctx.body = { attempt: n };
      });
      const key = newKey('5xx');
      const first = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const retry = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect([first.status, retry.status]).toEqual([503, 201]);
      expect(executions).toHaveLength(2);
    });

    it('releases the key after a thrown error so the retry runs', async () => {
      const { url, executions } = await start({}, (ctx, n) => {
        if (n === 1) throw new Error('boom');
        ctx.status = 201;
      });
      const key = newKey('throw');
      const first = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const retry = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect([first.status, retry.status]).toEqual([500, 201]);
      expect(executions).toHaveLength(2);
    });

    it('honours a custom shouldStore predicate', async () => {
      const { url, executions } = await start({ shouldStore: (status) => status < 400 }, (ctx, n) => {
        ctx.status = n === 1 ? 409 : 201;
      });
      const key = newKey('predicate');
      await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const retry = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect(retry.status).toBe(201);
      expect(executions).toHaveLength(2);
    });
  });

  describe('completion', () => {
    it('retries a completion that failed transiently, so the client retry is a replay, not a second run', async () => {
      const store = await db.store();
      let failures = 1;
      // The real store, but its first completion fails like a dropped connection.
      const flaky = new Proxy(store, {
        get(target, property) {
          if (property === 'complete') {
            return (lease: Lease, completion: Completion) =>
              failures-- > 0 ? Promise.reject(new Error('connection terminated unexpectedly')) : target.complete(lease, completion);
          }
          const value: unknown = Reflect.get(target, property, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }) as IdempotencyStore;
      const { app, executions } = createTestApp({ store: flaky });
      const server = await serve(app);
      servers.push(server);
      const key = newKey('flaky-complete');
      const first = await postJson(`${server.url}/orders`, { amount: 5 }, { key, account: 'a' });
      const retry = await postJson(`${server.url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect(first.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(executions).toHaveLength(1);
    });
  });

  describe('responses that cannot be replayed', () => {
    it.each([
      ['a stream', (ctx: import('koa').Context) => void (ctx.body = Readable.from(['chunk-1', 'chunk-2']))],
      ['a body over maxBodyBytes', (ctx: import('koa').Context) => void (ctx.body = 'x'.repeat(2_000))],
    ])('completes the record as not replayable for %s; a retry gets 409, not a second run', async (_label, respond) => {
      const { url, executions } = await start({ maxBodyBytes: 1_000 }, respond);
      const key = newKey('unreplayable');
      const first = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const retry = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect(first.status).toBe(200);
      expect(retry.status).toBe(409);
      expect(JSON.parse(retry.text).type).toBe(problemType('notReplayable'));
      expect(retry.headers.get('retry-after')).toBeNull();
      expect(executions).toHaveLength(1);
    });
  });
});
