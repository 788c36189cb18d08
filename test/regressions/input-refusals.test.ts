import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import mount from 'koa-mount';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, IdempotencyConfigError, problemType, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { PostgresStore, type SqlDatabase } from '../../src/entries/postgres.js';
import { DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS } from '../../src/protocol.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';
import { recordsExpired } from '../helpers/record-clock.js';

/**
 * Regression tests of issue 14: inputs and options that used to slip past the middleware (unparsed bodies,
 * mounted apps, numeric scopes, a TTL within the lease, a zero lock timeout, a busy claim's Retry-After).
 */

/** Enough for `idempotency()` to be constructed; never called. */
/** A store none of whose primitives is called: every one rejects. */
function storeOf(primitives: Partial<IdempotencyStore> = {}): IdempotencyStore {
  const unused = () => Promise.reject(new Error('not used'));
  const names = ['claim', 'claimInTransaction', 'complete', 'release', 'renewLease', 'saveStep', 'watch'] as const;
  return { ...Object.fromEntries(names.map((name) => [name, unused])), ...primitives } as unknown as IdempotencyStore;
}
const unusedStore = storeOf();

type Body = NonNullable<RequestInit['body']>;

interface Send {
  key: string;
  method?: string;
  path?: string;
  type?: string;
  body?: Body;
}

async function send(url: string, { key, method = 'POST', path = '/orders', type, body }: Send) {
  const headers: Record<string, string> = { 'idempotency-key': key };
  if (type) headers['content-type'] = type;
  const init: RequestInit & { duplex?: 'half' } = { method, headers, body };
  if (body instanceof ReadableStream) init.duplex = 'half';
  const response = await fetch(url + path, init);
  return { status: response.status, headers: response.headers, text: await response.text() };
}

/** A body sent chunked (no Content-Length): a stream of one chunk. */
function chunked(text: string): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(text));
      controller.close();
    },
  });
}

/**
 * The README's set-up (`bodyParser()` before the middleware) in front of a handler that counts its runs.
 * `keepRaw` puts a middleware first that buffers the bodies the parser does not handle into
 * `ctx.request.rawBody`, as apps that verify webhook signatures do.
 */
function readmeApp(
  store: IdempotencyStore,
  { keepRaw = false, parser = bodyParser(), options = {} }: { keepRaw?: boolean; parser?: Koa.Middleware; options?: Partial<IdempotencyOptions> } = {},
) {
  let executions = 0;
  const app = new Koa();
  app.silent = true;
  if (keepRaw) {
    app.use(async (ctx, next) => {
      if (ctx.is('application/merge-patch+json', 'application/octet-stream')) {
        const chunks: Buffer[] = [];
        for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
        (ctx.request as { rawBody?: unknown }).rawBody = Buffer.concat(chunks);
        ctx.disableBodyParser = true; // the stream is consumed: nothing is left for the parser to read
      }
      await next();
    });
  }
  app.use(parser);
  app.use(idempotency({ store, ...options }));
  app.use((ctx) => {
    executions++;
    ctx.status = 201;
    ctx.body = { execution: executions };
  });
  return { app, executions: () => executions };
}

describe('options refused when the middleware or the store is created', () => {
  it('refuses a ttlSeconds that does not outlast leaseMs, since the expired record would let a different request take over a live lease', () => {
    expect(() => idempotency({ store: unusedStore, ttlSeconds: 30, leaseMs: 30_000 })).toThrow(IdempotencyConfigError);
    expect(() => idempotency({ store: unusedStore, ttlSeconds: 1 })).toThrow(/ttlSeconds/);
    expect(() => idempotency({ store: unusedStore, ttlSeconds: 31, leaseMs: 30_000 })).not.toThrow();
  });

  it('refuses a lockTimeoutMs below 1 ms, which lock_timeout would round to 0 and so disable', () => {
    const database = {} as SqlDatabase;
    expect(() => new PostgresStore({ database, lockTimeoutMs: 0.4 })).toThrow(IdempotencyConfigError);
    expect(() => new PostgresStore({ database, lockTimeoutMs: 1 })).not.toThrow();
  });
});

describe.each(databaseTargets())('input hardening on $name', (target) => {
  let db: TestDatabase;
  let store: PostgresStore;
  let tables = 0;

  beforeAll(async () => {
    db = await target.open('input_hardening');
    store = await db.store({ table: 'records' });
  });
  afterAll(() => db?.close());

  async function withApp<T>(app: Koa, run: (url: string) => Promise<T>): Promise<T> {
    const server = await serve(app);
    try {
      return await run(server.url);
    } finally {
      await server.close();
    }
  }

  it('never drops a partition that holds a live lease, even once its record has outlived its TTL', async () => {
    const table = `partitioned_${++tables}`;
    const partitioned = await db.store({ table, replayCacheEntries: 0, partitioning: { intervalSeconds: 1, premadePartitions: 5 } });
    const claim = await partitioned.claim({ scope: 's', key: 'live-lease', fingerprint: 'f', fingerprintVersion: 1, leaseMs: 30_000, ttlSeconds: 1 });
    if (claim.kind !== 'claimed') throw new Error('expected a claim');
    await recordsExpired(db.sql, `"${db.schema}"."${table}"`); // its one-second partition has ended and its TTL has passed; the lease has not

    const report = await partitioned.maintainPartitions();
    expect(report.droppedRecords).toBe(0);
    expect(await partitioned.find('s', 'live-lease')).toMatchObject({ status: 'in_progress' });
    await expect(partitioned.complete(claim.lease, { replayable: false, status: 204 })).resolves.toBeUndefined();
  });

  describe('bodies the body parser left unparsed', () => {
    it('refuses a merge-patch body the README body parser left unparsed, instead of replaying it for a different amount', async () => {
      const { app, executions } = readmeApp(store);
      await withApp(app, async (url) => {
        const key = randomUUID();
        const type = 'application/merge-patch+json';
        const first = await send(url, { key, method: 'PATCH', path: '/orders/1', type, body: '{"amount":1}' });
        const second = await send(url, { key, method: 'PATCH', path: '/orders/1', type, body: '{"amount":999}' });
        for (const answer of [first, second]) {
          expect(answer.status).toBe(415);
          expect(answer.headers.get('content-type')).toMatch(/^application\/problem\+json/);
          expect(JSON.parse(answer.text).type).toBe(problemType('bodyNotRead'));
          expect(answer.headers.get('idempotent-replayed')).toBeNull();
        }
        expect(executions()).toBe(0);
      });
    });

    it.each<[string, string | undefined, () => Body]>([
      ['text/csv', 'text/csv', () => 'amount\n1'],
      ['XML', 'application/xml', () => '<amount>1</amount>'],
      ['octet-stream', 'application/octet-stream', () => new Uint8Array([1, 2, 3])],
      ['multipart', undefined, () => formData()],
      ['chunked text/plain', 'text/plain', () => chunked('amount=1')],
    ])('refuses a non-empty %s body that was neither parsed nor kept raw, and never runs the handler', async (_label, type, body) => {
      const { app, executions } = readmeApp(store);
      await withApp(app, async (url) => {
        const answer = await send(url, { key: randomUUID(), type, body: body() });
        expect(answer.status).toBe(415);
        expect(JSON.parse(answer.text).type).toBe(problemType('bodyNotRead'));
        expect(executions()).toBe(0);
      });
    });

    it('fingerprints the raw bytes of an unparsed body kept in ctx.request.rawBody: another body under the key gets 422', async () => {
      const { app, executions } = readmeApp(store, { keepRaw: true });
      await withApp(app, async (url) => {
        const key = randomUUID();
        const type = 'application/merge-patch+json';
        const patch = (amount: number) => send(url, { key, method: 'PATCH', path: '/orders/1', type, body: `{"amount":${amount}}` });
        expect((await patch(1)).status).toBe(201);
        expect((await patch(999)).status).toBe(422);
        const retry = await patch(1);
        expect(retry.status).toBe(201);
        expect(retry.headers.get('idempotent-replayed')).toBe('true');
        expect(executions()).toBe(1);
      });
    });

    it('fingerprints a merge-patch body once the parser takes +json types, as the README shows: another amount gets 422', async () => {
      const parser = bodyParser({ extendTypes: { json: ['application/json', 'application/*+json'] } });
      const { app, executions } = readmeApp(store, { parser });
      await withApp(app, async (url) => {
        const key = randomUUID();
        const patch = (amount: number) => send(url, { key, method: 'PATCH', path: '/orders/1', type: 'application/merge-patch+json', body: `{"amount":${amount}}` });
        expect((await patch(1)).status).toBe(201);
        expect((await patch(999)).status).toBe(422);
        expect((await send(url, { key: randomUUID(), type: 'application/json', body: '{"amount":1}' })).status).toBe(201); // JSON still parsed
        expect(executions()).toBe(2);
      });
    });

    it('keeps the fingerprint of a parsed JSON or form body as version 1 computed it', async () => {
      const { app } = readmeApp(store);
      await withApp(app, async (url) => {
        const json = randomUUID();
        const form = randomUUID();
        expect((await send(url, { key: json, path: '/orders?dry=1', type: 'application/json', body: '{"currency":"EUR","amount":5}' })).status).toBe(201);
        expect((await send(url, { key: form, path: '/orders?dry=1', type: 'application/x-www-form-urlencoded', body: 'amount=5&currency=EUR' })).status).toBe(201);
        // The first word: the per-part digests stored after it (for the 422's differences) are not the fingerprint.
        expect((await store.find('', json))?.fingerprint.split(' ')[0]).toBe('88cb5e4170832ee270967a2cdbede6db6f8a78b159f28dc9c00b371cb3175837');
        expect((await store.find('', form))?.fingerprint.split(' ')[0]).toBe('f59439a1d2104da2af5dfcc939d2e9a61b36e4dc5c4ada8a54291f30e0a2873b');
      });
    });
  });

  it("keeps two mounted apps that share a store and scope from replaying each other's responses", async () => {
    const ran: string[] = [];
    const child = (name: string) => {
      const app = new Koa();
      app.use(idempotency({ store }));
      app.use((ctx) => {
        ran.push(name);
        ctx.status = 201;
        ctx.body = { app: name };
      });
      return app;
    };
    const parent = new Koa();
    parent.silent = true;
    parent.use(bodyParser());
    parent.use(mount('/a', child('a')));
    parent.use(mount('/b', child('b')));
    await withApp(parent, async (url) => {
      const key = randomUUID();
      const body = '{"amount":1}';
      expect((await send(url, { key, path: '/a/orders', type: 'application/json', body })).status).toBe(201);
      const other = await send(url, { key, path: '/b/orders', type: 'application/json', body });
      expect(other.status).toBe(422);
      expect(ran).toEqual(['a']);
    });
  });

  it("answers a numeric scope's replay from the replay cache, without a query", async () => {
    let queries = 0;
    const counting = new Proxy(db.sql, {
      get(sql, name) {
        if (name === 'close') return () => Promise.resolve(); // the database belongs to the test
        const value = Reflect.get(sql, name) as unknown;
        if (name === 'query') queries++;
        return typeof value === 'function' ? value.bind(sql) : value;
      },
    });
    const cached = new PostgresStore({ database: counting, schema: db.schema, table: 'numeric_scope' });
    await cached.migrate();
    const { app, executions } = readmeApp(cached, { options: { scope: () => 42 } });
    await withApp(app, async (url) => {
      const key = randomUUID();
      const order = () => send(url, { key, type: 'application/json', body: '{"amount":1}' });
      expect((await order()).status).toBe(201);
      expect((await order()).headers.get('idempotent-replayed')).toBe('true'); // read from the table, then cached
      queries = 0;
      expect((await order()).headers.get('idempotent-replayed')).toBe('true');
      expect(queries).toBe(0);
      expect(executions()).toBe(1);
    });
    await cached.close();
  });

  it('sends the documented Retry-After for a busy claim, which carries no lease to count down', async () => {
    // A store whose transactional claim always finds the key locked by another, uncommitted transaction.
    const busy = storeOf({ claimInTransaction: () => Promise.resolve({ kind: 'busy' as const }) });
    const { app, executions } = readmeApp(busy, { options: { transactional: true } });
    await withApp(app, async (url) => {
      const answer = await send(url, { key: randomUUID(), type: 'application/json', body: '{"amount":1}' });
      expect(answer.status).toBe(409);
      expect(answer.headers.get('retry-after')).toBe(String(DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS));
      expect(executions()).toBe(0);
    });
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const row = readme.split('\n').find((line) => line.includes('problem `request-in-progress`'));
    expect(row).toContain(`\`Retry-After: ${DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS}\``);
  });
});

function formData(): FormData {
  const form = new FormData();
  form.append('amount', '1');
  return form;
}
