import { describe, expect, it } from 'vitest';
import { problemType } from '../src/index.js';
import { databaseTargets } from './helpers/databases.js';
import { until } from './helpers/events.js';
import { postJson } from './helpers/http.js';
import { middlewareHarness, newKey } from './helpers/middleware-harness.js';

/** One execution per key: concurrent duplicates run once, the stored response replays byte for byte (test/helpers/middleware-harness.ts). */
describe.each(databaseTargets())('idempotency middleware on $name', (target) => {
  const middleware = middlewareHarness(target, 'middleware_once');
  const { start } = middleware;

  describe('one execution per key', () => {
    it('runs 50 concurrent identical requests exactly once; the others get 409 or the replay', async () => {
      let answered = 0;
      const { url, executions } = await start({}, async (ctx) => {
        // The one execution lasts until the 49 others have their answers: each arrives while it runs.
        await until(() => (answered === 49 ? true : undefined), 'the 49 duplicates answered');
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey('burst');
      const answers = await Promise.all(Array.from({ length: 50 }, () => postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' }).finally(() => answered++)));
      expect(executions).toHaveLength(1);
      const statuses = answers.map((a) => a.status);
      expect(statuses.filter((s) => s === 201)).not.toHaveLength(0);
      expect(statuses.every((s) => s === 201 || s === 409)).toBe(true);
      const conflicts = answers.filter((a) => a.status === 409);
      for (const conflict of conflicts) {
        expect(conflict.headers.get('content-type')).toBe('application/problem+json');
        expect(JSON.parse(conflict.text).type).toBe(problemType('inProgress'));
        expect(Number(conflict.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      }
    });

    it('replays the stored response byte for byte with replay-safe headers and Idempotent-Replayed', async () => {
      const { url, executions } = await start({}, (ctx) => {
        ctx.status = 201;
        ctx.set('Location', '/orders/42');
        ctx.set('ETag', '"v1"');
        ctx.set('X-Custom', 'kept');
        ctx.set('Set-Cookie', 'session=secret; HttpOnly');
        ctx.set('Authorization', 'Bearer should-not-be-stored');
        ctx.set('Connection', 'keep-alive');
        ctx.body = { id: 42, note: 'caf\u00e9 \u2603', nested: { b: 1, a: [1, 2] } };
      });
      const key = newKey('replay');
      const first = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const replay = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });

      expect(executions).toHaveLength(1);
      expect(first.status).toBe(201);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      expect(replay.status).toBe(201);
      expect(replay.text).toBe(first.text);
      expect(replay.headers.get('content-type')).toBe(first.headers.get('content-type'));
      expect(replay.headers.get('content-length')).toBe(first.headers.get('content-length'));
      expect(replay.headers.get('location')).toBe('/orders/42');
      expect(replay.headers.get('etag')).toBe('"v1"');
      expect(replay.headers.get('x-custom')).toBe('kept');
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.headers.get('set-cookie')).toBeNull();
      expect(replay.headers.get('authorization')).toBeNull();
    });

    it('replays a stored 4xx outcome without running the handler again', async () => {
      const { url, executions } = await start({}, (ctx) => {
        ctx.status = 402;
        ctx.body = { error: 'card_declined' };
      });
      const key = newKey('declined');
      const first = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const again = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect([first.status, again.status]).toEqual([402, 402]);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(executions).toHaveLength(1);
    });

    it('treats a JSON body with the same members in another order as the same request', async () => {
      const { url, executions } = await start();
      const key = newKey('order');
      await postJson(`${url}/orders`, '{"amount":5,"currency":"EUR","meta":{"x":1,"y":2}}', { key, account: 'a' });
      const again = await postJson(`${url}/orders`, '{ "meta": {"y":2, "x":1}, "currency":"EUR", "amount":5 }', { key, account: 'a' });
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(executions).toHaveLength(1);
    });

    it('accepts the quoted sf-string form of the key as the same key', async () => {
      const { url, executions } = await start();
      const key = newKey('quoted');
      await postJson(`${url}/orders`, { amount: 1 }, { key, account: 'a' });
      const again = await postJson(`${url}/orders`, { amount: 1 }, { key: `"${key}"`, account: 'a' });
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(executions).toHaveLength(1);
    });
  });
});
