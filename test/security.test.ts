import { createHash } from 'node:crypto';
import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import fc from 'fast-check';
import pg from 'pg';
import { context, propagation, trace } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { registerTracerProvider, simpleSpanProcessor } from './helpers/otel-sdk.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql } from '../examples/payments/app.js';
import { DEFAULT_MAX_KEY_LENGTH, idempotency, IdempotencyConfigError, problemType, type IdempotencyOptions } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { ATTR, BAGGAGE_CORRELATION_ID, correlationIdFor } from '../src/entries/otel.js';
import { readKey } from '../src/key.js';
import { upstreamCorrelationId } from '../src/telemetry/correlation.js';
import { DATABASE_URL, databaseTargets, type TestDatabase } from './helpers/databases.js';
import { until } from './helpers/events.js';
import { postJson, serve } from './helpers/http.js';

/**
 * The security promises of SECURITY.md, each as a test: tenant isolation, no replay of credentials,
 * identifiers that cannot inject SQL, keys hashed in telemetry, bounded bodies, parsers that a hostile
 * input cannot make slow.
 */

const exporter = new InMemorySpanExporter();
const provider = registerTracerProvider({ spanProcessors: [simpleSpanProcessor(exporter)] });
const tracer = trace.getTracer('security-test');

/** Stands in for the HTTP server instrumentation: every request runs in an active server span. */
const serverSpan: Koa.Middleware = (ctx, next) => tracer.startActiveSpan(`${ctx.method} ${ctx.path}`, (span) => next().finally(() => span.end()));

/** Everything telemetry recorded, as one string to search for a leaked secret. */
function everythingRecorded(): string {
  return JSON.stringify(exporter.getFinishedSpans().map((span) => ({ name: span.name, attributes: span.attributes, events: span.events, links: span.links })));
}

afterAll(() => provider.shutdown());

describe('identifiers', () => {
  it('refuses any table or schema name that is not a plain lower-case identifier, an injection included', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('x"; DROP TABLE users; --', 'a b', 'A', 'a-b', 'a.b', "a'b", 'é', 'x'.repeat(49))), (name) => {
        fc.pre(!/^[a-z_][a-z0-9_]{0,47}$/.test(name));
        expect(() => new PostgresStore({ database: {} as never, table: name })).toThrow(IdempotencyConfigError);
        expect(() => new PostgresStore({ database: {} as never, schema: name })).toThrow(IdempotencyConfigError);
      }),
      { numRuns: 1_000 },
    );
  });

  it('refuses a header name that could split a response or a request', () => {
    for (const headerName of ['Idempotency-Key\r\nX-Evil: 1', 'Idempotency Key', 'Idempotency-Key:', '']) {
      expect(() => idempotency({ store: { claim: async () => undefined } as never, headerName })).toThrow(IdempotencyConfigError);
    }
  });
});

describe('parsers a hostile input cannot make slow', () => {
  /**
   * Linear parsers answer a megabyte in tens of milliseconds; a backtracking one would take minutes. The
   * bound is generous because the machine running the tests may be busy.
   */
  const BOUND_MS = 2_000;
  const adversarial = (n: number) => [
    '"' + '\\'.repeat(n),
    '"' + '\\"'.repeat(n),
    '"' + 'a'.repeat(n),
    'a'.repeat(n) + '\x00',
    ','.repeat(n),
    '"' + ' '.repeat(n) + '\x01"',
    ' '.repeat(n) + 'a b',
  ];

  it.each([
    ['the default key length', DEFAULT_MAX_KEY_LENGTH],
    ['a raised key length of 1,000,000', 1_000_000],
  ])('reads adversarial key headers of up to 1 MB in bounded time with %s', (_label, maxKeyLength) => {
    for (const raw of adversarial(1_000_000)) {
      const startedMs = performance.now();
      const reading = readKey(raw, { minKeyLength: 1, maxKeyLength });
      expect(performance.now() - startedMs).toBeLessThan(BOUND_MS);
      expect(reading.kind).toBe('invalid');
    }
  });

  it('checks an upstream correlation ID from hostile baggage in bounded time', () => {
    for (const value of ['a'.repeat(1_000_000), 'a'.repeat(1_000_000) + '!', '.:'.repeat(500_000)]) {
      const baggage = propagation.createBaggage({ [BAGGAGE_CORRELATION_ID]: { value } });
      const startedMs = performance.now();
      expect(upstreamCorrelationId(propagation.setBaggage(context.active(), baggage))).toBeUndefined();
      expect(performance.now() - startedMs).toBeLessThan(BOUND_MS);
    }
  });

  it('checks identifiers in bounded time', () => {
    for (const value of ['a'.repeat(1_000_000), 'a'.repeat(1_000_000) + '"']) {
      const startedMs = performance.now();
      expect(() => new PostgresStore({ database: {} as never, table: value })).toThrow(IdempotencyConfigError);
      expect(performance.now() - startedMs).toBeLessThan(BOUND_MS);
    }
  });
});

describe('correlation IDs', () => {
  it('never collide across scope and key boundaries, and never contain the key', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.string({ minLength: 2 }), (scope, key) => {
        const shifted = correlationIdFor(scope + key[0], key.slice(1));
        expect(shifted).not.toBe(correlationIdFor(scope, key));
        expect(correlationIdFor(scope, key)).toMatch(/^[0-9a-f]{32}$/);
      }),
    );
  });
});

describe.each(databaseTargets())('on $name', (target) => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await target.open('security');
    for (const statement of paymentsSchemaSql(db.schema).split(';\n')) await db.sql.query(statement);
  });
  afterAll(() => db?.close());
  afterEach(() => exporter.reset());

  async function app(options: Partial<IdempotencyOptions> & { handler: Koa.Middleware }) {
    const store = await db.store({ replayCacheEntries: 0 });
    const koa = new Koa();
    koa.silent = true;
    const router = new Router();
    const { handler, ...rest } = options;
    router.post('/op', idempotency({ store, ...rest }), handler);
    koa.use(serverSpan);
    koa.use(bodyParser({ jsonLimit: '16kb' }));
    koa.use(router.routes());
    return { store, server: await serve(koa) };
  }

  describe('tenant isolation', () => {
    it('keeps the same key of two principals apart: each gets its own execution and only its own replay', async () => {
      const store = await db.store();
      const server = await serve(createPaymentsApp({ store, sql: db.sql, schema: db.schema }));
      try {
        const key = 'shared-key-between-tenants';
        const alice = await postJson(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key, account: 'alice' });
        const mallory = await postJson(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key, account: 'mallory' });
        expect(alice.status).toBe(201);
        expect(mallory.status).toBe(201);
        expect(mallory.headers.get('idempotent-replayed')).toBeNull();
        expect(JSON.parse(mallory.text).id).not.toBe(JSON.parse(alice.text).id);

        const malloryAgain = await postJson(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key, account: 'mallory' });
        expect(malloryAgain.headers.get('idempotent-replayed')).toBe('true');
        expect(malloryAgain.text).toBe(mallory.text);
        const peek = await fetch(`${server.url}/payments/${JSON.parse(alice.text).id}`, { headers: { authorization: 'Bearer mallory' } });
        expect(peek.status).toBe(404);
      } finally {
        await server.close();
      }
    });

    it('does not confuse a scope and key pair with a shifted one, also when the replay cache answers', async () => {
      // The replay cache is on (its default): its key is the one place where scope and key are joined into one
      // string; the table keys on the pair. The completed record is replayed once, which puts it in the cache.
      const store = await db.store();
      const request = { fingerprint: 'f', fingerprintVersion: 1, leaseMs: 10_000, ttlSeconds: 60 };
      const first = await store.claim({ ...request, scope: 'shift-ab', key: 'c' });
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(first.lease, { replayable: true, response: { status: 201, headers: {}, body: Buffer.from('ab+c') } });
      expect((await store.claim({ ...request, scope: 'shift-ab', key: 'c' })).kind).toBe('existing');

      expect((await store.claim({ ...request, scope: 'shift-a', key: 'bc' })).kind).toBe('claimed');
      expect((await store.claim({ ...request, scope: 'shift-', key: 'abc' })).kind).toBe('claimed');
    });
  });

  describe('credentials are never stored or replayed', () => {
    it('drops Set-Cookie, Authorization, Proxy-Authenticate and configured headers from the record and the replay', async () => {
      const { store, server } = await app({
        excludeHeaders: ['X-Session-Token'],
        handler: (ctx) => {
          ctx.status = 201;
          ctx.set('Set-Cookie', 'session=s3cret; HttpOnly');
          ctx.set('Authorization', 'Bearer s3cret');
          ctx.set('Proxy-Authenticate', 'Basic realm="s3cret"');
          ctx.set('X-Session-Token', 's3cret');
          ctx.set('X-Visible', 'kept');
          ctx.body = { ok: true };
        },
      });
      try {
        const first = await postJson(`${server.url}/op`, {}, { key: 'cookie-key' });
        expect(first.headers.get('set-cookie')).toContain('s3cret');
        const replay = await postJson(`${server.url}/op`, {}, { key: 'cookie-key' });
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.headers.get('x-visible')).toBe('kept');
        for (const name of ['set-cookie', 'authorization', 'proxy-authenticate', 'x-session-token']) expect(replay.headers.get(name), name).toBeNull();
        const record = await store.find('', 'cookie-key');
        expect(JSON.stringify(record?.response?.headers)).not.toContain('s3cret');
      } finally {
        await server.close();
      }
    });
  });

  describe('keys in telemetry and problems', () => {
    const secretKey = 'customer-4111111111111111-order-77';

    it('records only a hash of the key by default, on spans, events and baggage', async () => {
      let baggageSeen: string | undefined;
      const { server } = await app({
        handler: (ctx) => {
          baggageSeen = JSON.stringify(propagation.getBaggage(context.active())?.getAllEntries());
          ctx.status = 201;
          ctx.body = { ok: true };
        },
      });
      try {
        await postJson(`${server.url}/op`, { a: 1 }, { key: secretKey });
        await postJson(`${server.url}/op`, { a: 1 }, { key: secretKey }); // replay: a duplicate event
        await postJson(`${server.url}/op`, { a: 2 }, { key: secretKey }); // mismatch: another event
        const spans = exporter.getFinishedSpans();
        expect(spans.length).toBe(3);
        expect(spans[0]!.attributes[ATTR.KEY_HASH]).toMatch(/^[0-9a-f]{32}$/);
        expect(spans[0]!.attributes[ATTR.KEY]).toBeUndefined();
        expect(everythingRecorded()).not.toContain(secretKey);
        expect(baggageSeen).toBeDefined();
        expect(baggageSeen).not.toContain(secretKey);
      } finally {
        await server.close();
      }
    });

    it('records the raw key only when asked to', async () => {
      const { server } = await app({ telemetry: { recordRawKey: true }, handler: (ctx) => void (ctx.status = 204) });
      try {
        await postJson(`${server.url}/op`, {}, { key: secretKey });
        expect(exporter.getFinishedSpans()[0]!.attributes[ATTR.KEY]).toBe(secretKey);
      } finally {
        await server.close();
      }
    });

    it('never echoes the key in a problem response', async () => {
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let started!: () => void;
      const holding = new Promise<void>((resolve) => (started = resolve));
      const { server } = await app({
        handler: async (ctx) => {
          if ((ctx.request.body as { hold?: boolean }).hold) {
            started();
            await held;
          }
          ctx.status = 201;
        },
      });
      try {
        const running = postJson(`${server.url}/op`, { hold: true }, { key: `${secretKey}-1` });
        await Promise.race([holding, running]); // the duplicate comes while the first runs
        const conflict = await postJson(`${server.url}/op`, { hold: true }, { key: `${secretKey}-1` });
        release();
        await running;
        const mismatch = await postJson(`${server.url}/op`, { other: true }, { key: `${secretKey}-1` });
        const invalid = await postJson(`${server.url}/op`, {}, { key: `${secretKey} with space` });
        expect([conflict.status, mismatch.status, invalid.status]).toEqual([409, 422, 400]);
        for (const answer of [conflict, mismatch, invalid]) expect(answer.text).not.toContain(secretKey);
      } finally {
        await server.close();
      }
    });
  });

  describe('size caps', () => {
    it('refuses a request body over the parser limit with a 413 problem, before any claim', async () => {
      const store = await db.store();
      const server = await serve(createPaymentsApp({ store, sql: db.sql, schema: db.schema }));
      try {
        const huge = { amount: 1, currency: 'EUR', pad: 'x'.repeat(100 * 1024) };
        const answer = await postJson(`${server.url}/payments`, huge, { key: 'huge-body', account: 'alice' });
        expect(answer.status).toBe(413);
        expect(answer.headers.get('content-type')).toBe('application/problem+json');
        expect(await store.find('alice', 'huge-body')).toBeUndefined();
      } finally {
        await server.close();
      }
    });

    it('stores no response over maxBodyBytes: a retry gets 409 not-replayable instead of a second execution', async () => {
      let executions = 0;
      const { store, server } = await app({
        maxBodyBytes: 1024,
        handler: (ctx) => {
          executions++;
          ctx.status = 201;
          ctx.body = 'y'.repeat(4096);
        },
      });
      try {
        expect((await postJson(`${server.url}/op`, {}, { key: 'big-response' })).text).toHaveLength(4096);
        const retry = await postJson(`${server.url}/op`, {}, { key: 'big-response' });
        expect(retry.status).toBe(409);
        expect(JSON.parse(retry.text).type).toBe(problemType('notReplayable'));
        expect(executions).toBe(1);
        expect((await store.find('', 'big-response'))?.response).toBeNull();
      } finally {
        await server.close();
      }
    });
  });
});

describe('NOTIFY payloads', () => {
  it('carry a hash, never the key or the scope, to every listener of the database, and only while someone waits', async () => {
    const db = await databaseTargets()[0]!.open('security_notify');
    const listener = new pg.Client({ connectionString: DATABASE_URL });
    try {
      const store = await db.store();
      const channel = `koa_idempotency_${createHash('sha256').update(`${db.schema}.idempotency_records`).digest('hex').slice(0, 16)}`;
      await listener.connect();
      const payloads: string[] = [];
      listener.on('notification', (message) => payloads.push(message.payload ?? ''));
      await listener.query(`LISTEN "${channel}"`);

      const request = (key: string) => ({ scope: 'tenant-secret', key, fingerprint: 'f', fingerprintVersion: 1, leaseMs: 10_000, ttlSeconds: 60 });
      // Nobody waits: the completion sends no notification (NOTIFY serialises every commit that sends one).
      const unwatched = await store.claim(request('key-unwatched'));
      if (unwatched.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(unwatched.lease, { replayable: false, status: 201 });

      const claim = await store.claim(request('key-secret'));
      if (claim.kind !== 'claimed') throw new Error('expected a claim');
      const watch = await store.watch('tenant-secret', 'key-secret');
      await store.complete(claim.lease, { replayable: false, status: 201 });
      expect(await watch.next(5_000)).toBe('changed');
      watch.close();
      await until(() => (payloads.length > 0 ? true : undefined), 'the notification payload', 1_000);

      expect(payloads).toHaveLength(1);
      expect(payloads[0]).toMatch(/^[0-9a-f]{32}$/);
    } finally {
      await listener.end();
      await db.close();
    }
  });
});
