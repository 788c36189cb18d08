import { Readable } from 'node:stream';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { problemType, type Completion, type IdempotencyOptions, type IdempotencyStore, type Lease } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { createTestApp, type TestAppOptions } from './helpers/app.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { until } from './helpers/events.js';
import { postJson, serve } from './helpers/http.js';
import { recordsExpired } from './helpers/record-clock.js';

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe.each(databaseTargets())('idempotency middleware on $name', (target) => {
  let db: TestDatabase;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('middleware');
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  afterAll(() => db?.close());

  async function start(options: Partial<IdempotencyOptions> = {}, respond?: TestAppOptions['respond']) {
    const store = await db.store();
    const { app, executions } = createTestApp({ store, options, respond });
    const server = await serve(app);
    servers.push(server);
    return { url: server.url, executions, store };
  }

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

  describe('mismatch', () => {
    it.each([
      ['a different body', '/orders', { amount: 6 }],
      ['a different path', '/orders/7/refund', { amount: 5 }],
    ])('answers 422 to the same key with %s, and runs nothing', async (_label, path, body) => {
      const { url, executions } = await start();
      const key = newKey('mismatch');
      await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const other = await postJson(`${url}${path}`, body, { key, account: 'a' });
      expect(other.status).toBe(422);
      expect(other.headers.get('content-type')).toBe('application/problem+json');
      expect(JSON.parse(other.text)).toMatchObject({ type: problemType('keyReused'), status: 422 });
      expect(executions).toHaveLength(1);
    });

    it('answers 422 when the method and path differ (PATCH /orders/1 after POST /orders)', async () => {
      const { url, executions } = await start();
      const key = newKey('method');
      await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const patchRoute = await fetch(`${url}/orders/1`, {
        method: 'PATCH',
        headers: { 'idempotency-key': key, authorization: 'Bearer a', 'content-type': 'application/json' },
        body: '{"amount":5}',
      });
      expect(patchRoute.status).toBe(422);
      expect(executions).toHaveLength(1);
    });
  });

  describe('scope', () => {
    it('keeps the same key of two tenants apart: each runs once and gets its own replay', async () => {
      const { url, executions } = await start();
      const key = newKey('tenant');
      const a1 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-a' } });
      const b1 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-b' } });
      const a2 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-a' } });
      const b2 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-b' } });
      expect(executions.map((e) => e.account)).toEqual(['tenant-a', 'tenant-b']);
      expect(a2.text).toBe(a1.text);
      expect(b2.text).toBe(b1.text);
      expect(a1.text).not.toBe(b1.text);
    });
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

  describe('keys', () => {
    it('passes requests without a key through when keys are optional', async () => {
      const { url, executions } = await start();
      await postJson(`${url}/orders`, { amount: 5 }, { account: 'a' });
      await postJson(`${url}/orders`, { amount: 5 }, { account: 'a' });
      expect(executions).toHaveLength(2);
    });

    it('answers 400 key-missing when a key is required', async () => {
      const { url, executions } = await start({ required: true });
      const answer = await postJson(`${url}/orders`, { amount: 5 }, { account: 'a' });
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.text).type).toBe(problemType('keyMissing'));
      expect(executions).toHaveLength(0);
    });

    it.each([
      ['a comma (two merged headers)', 'k1, k2'],
      ['a key longer than maxKeyLength', 'k'.repeat(300)],
      ['a space inside a bare key', 'two words'],
      ['an unterminated quoted key', '"abc'],
      ['a bad escape in a quoted key', '"a\\bc"'],
      ['an empty quoted key', '""'],
    ])('answers 400 key-invalid for %s and runs nothing', async (_label, key) => {
      const { url, executions } = await start();
      const answer = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.text).type).toBe(problemType('keyInvalid'));
      expect(executions).toHaveLength(0);
    });

    it('leaves methods outside `methods` alone (GET with a key runs every time)', async () => {
      const { url, executions } = await start();
      const key = newKey('get');
      await fetch(`${url}/orders`, { headers: { 'idempotency-key': key, 'x-account': 'a' } });
      await fetch(`${url}/orders`, { headers: { 'idempotency-key': key, 'x-account': 'a' } });
      expect(executions).toHaveLength(2);
    });
  });

  describe('in progress and expiry', () => {
    it('answers 409 with Retry-After: 1 while the first request runs, not its remaining lease (20 s)', async () => {
      let started!: () => void;
      const running = new Promise<void>((resolve) => (started = resolve));
      let finish!: () => void;
      const gate = new Promise<void>((resolve) => (finish = resolve));
      const { url, executions } = await start({ leaseMs: 20_000 }, async (ctx) => {
        started();
        await gate; // runs until the duplicate has had its answer
        ctx.status = 201;
      });
      const key = newKey('slow');
      const first = postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      await running;
      const duplicate = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      finish();
      expect(duplicate.status).toBe(409);
      expect(duplicate.headers.get('retry-after')).toBe('1');
      expect((await first).status).toBe(201);
      expect(executions).toHaveLength(1);
    });

    it('runs a key again, even with another body, once its record has expired', async () => {
      const { url, executions } = await start({ ttlSeconds: 1, leaseMs: 500 }); // the TTL must outlast the lease
      const key = newKey('ttl');
      await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      await recordsExpired(db.sql, `"${db.schema}".idempotency_records`, [key]);
      const later = await postJson(`${url}/orders`, { amount: 6 }, { key, account: 'a' });
      expect(later.status).toBe(201);
      expect(later.headers.get('idempotent-replayed')).toBeNull();
      expect(executions).toHaveLength(2);
    });
  });
});

describe('when the store is unreachable', () => {
  it.each([
    [
      'a pg pool whose server refuses connections',
      async () => {
        const pool = new pg.Pool({ host: '127.0.0.1', port: 1, connectionTimeoutMillis: 1_000 });
        return { store: new PostgresStore({ pool }), close: () => pool.end() };
      },
    ],
    [
      'a closed PGlite',
      async () => {
        const pglite = await PGlite.create();
        await pglite.close();
        return { store: new PostgresStore({ pglite }), close: async () => undefined };
      },
    ],
  ])('answers 503 problem with Retry-After and never runs the handler (%s)', async (_label, open) => {
    const { store, close } = await open();
    const { app, executions } = createTestApp({ store });
    const server = await serve(app);
    try {
      const answer = await postJson(`${server.url}/orders`, { amount: 5 }, { key: 'down-1', account: 'a' });
      expect(answer.status).toBe(503);
      expect(answer.headers.get('retry-after')).toBe('5');
      expect(JSON.parse(answer.text).type).toBe(problemType('storeUnavailable'));
      expect(executions).toHaveLength(0);
    } finally {
      await server.close();
      await store.close();
      await close();
    }
  });
});
