import { randomUUID } from 'node:crypto';
import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, problemType, type IdempotencyOptions, type IdempotencyStore, type ProblemName } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';
import { until } from '../helpers/events.js';

/** Regressions of issue 14 (its defects 1, 3, 5 and 9), each describe block named after the behaviour. */

/** An answer that takes longer than this is a hang (a leaked transaction, lock or pool client). */
const ANSWER_BOUND_MS = 4_000;
/** "At once": a retry that waits for a lock timeout or a lease would take seconds. */
const AT_ONCE_MS = 2_000;

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

type Answer = Awaited<ReturnType<typeof post>>;

/** POST with a key; a hang fails the request (AbortSignal) instead of the whole test's timeout. */
async function post(url: string, key: string, headers: Record<string, string> = {}, timeoutMs = ANSWER_BOUND_MS) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
    body: '{"amount":10}',
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

function circular(): unknown {
  const body: Record<string, unknown> = { id: 1 };
  body.self = body;
  return body;
}

const MODES = [
  { mode: 'lease', transactional: false },
  { mode: 'transactional', transactional: true },
] as const;

describe.each(databaseTargets())('lifecycle hardening on $name', (target) => {
  let db: TestDatabase;
  let store: PostgresStore;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('lifecycle');
    store = await db.store();
    await db.sql.query(`CREATE TABLE "${db.schema}".charges (id serial PRIMARY KEY, key text NOT NULL)`);
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  afterAll(() => db?.close());

  interface AppOptions {
    transactional: boolean;
    /** Runs after the handler wrote its charge (transactional mode) and set `201 {execution}`. */
    respond?: (ctx: Koa.Context, execution: number) => void | Promise<void>;
    /** Middleware in front of the idempotency middleware (CORS, request IDs, rate limits). */
    outer?: Koa.Middleware;
    options?: Partial<IdempotencyOptions>;
    store?: IdempotencyStore;
  }

  /** POST /charges: in transactional mode the handler writes a charge row through ctx.idempotency.db. */
  async function start({ transactional, respond, outer, options, store: appStore = store }: AppOptions) {
    let executions = 0;
    const app = new Koa();
    app.silent = true;
    if (outer) app.use(outer);
    const router = new Router();
    router.post('/charges', idempotency({ store: appStore, transactional, ...options }), async (ctx) => {
      const execution = ++executions;
      await ctx.idempotency?.db?.query(`INSERT INTO "${db.schema}".charges (key) VALUES ($1)`, [ctx.idempotency.key]);
      ctx.status = 201;
      ctx.body = { execution };
      await respond?.(ctx, execution);
    });
    app.use(bodyParser());
    app.use(router.routes());
    const server = await serve(app);
    servers.push(server);
    return { url: `${server.url}/charges`, executions: () => executions };
  }

  const charges = (key: string) => rowsWithKey(db.sql, `"${db.schema}".charges`, key);

  /** A response written around Koa reaches the client before its record is completed: wait for that. */
  async function completed(key: string): Promise<void> {
    await until(async () => ((await store.find('', key))?.status === 'completed' ? true : undefined), `the record of ${key} completed`, ANSWER_BOUND_MS);
  }

  function expectProblem(answer: Answer, status: number, name: ProblemName): void {
    expect(answer.status, answer.text).toBe(status);
    expect(answer.headers.get('content-type')).toBe('application/problem+json');
    expect(JSON.parse(answer.text).type).toBe(problemType(name));
  }

  describe.each(MODES)('$mode mode', ({ mode, transactional }) => {
    describe('a failure after the handler ends the claim', () => {
      it.each([
        ['a BigInt', () => ({ amount: 10n })],
        ['a circular', circular],
      ])('answers a 500 problem when the response body holds %s value, and the same key runs again at once', async (_label, body) => {
        const { url, executions } = await start({
          transactional,
          respond: (ctx, n) => {
            if (n === 1) ctx.body = body();
          },
        });
        const key = newKey(`unserialisable-${mode}`);
        const first = await post(url, key);
        expectProblem(first, 500, 'requestFailed');
        expect(await store.find('', key)).toBeUndefined();

        const retry = await post(url, key, {}, AT_ONCE_MS);
        expect(retry.status).toBe(201);
        expect(executions()).toBe(2);
        if (transactional) expect(await charges(key)).toBe(1);
      });

      it('answers a 500 problem when the shouldStore hook throws, and the same key runs again at once', async () => {
        let hookCalls = 0;
        const { url, executions } = await start({
          transactional,
          options: {
            shouldStore: (status) => {
              if (++hookCalls === 1) throw new Error('shouldStore hook failed');
              return status < 500;
            },
          },
        });
        const key = newKey(`should-store-throws-${mode}`);
        expectProblem(await post(url, key), 500, 'requestFailed');
        expect(await store.find('', key)).toBeUndefined();

        const retry = await post(url, key, {}, AT_ONCE_MS);
        expect(retry.status).toBe(201);
        expect(executions()).toBe(2);
        if (transactional) expect(await charges(key)).toBe(1);
      });

      // Lease mode holds no connection while the handler runs; the pool is at stake in transactional mode.
      it.runIf(transactional)(
        `never drains the pool: after twice the pool size of unserialisable responses, a normal request succeeds at once${transactional ? '' : ' (skipped in lease mode: it holds no connection while the handler runs)'}`,
        async () => {
          const poolSize = db.newPool ? 3 : 1; // PGlite is one connection
          const appStore = db.newPool ? new PostgresStore({ pool: db.newPool(poolSize), schema: db.schema }) : store;
          const { url } = await start({
            transactional,
            store: appStore,
            respond: (ctx) => {
              if (ctx.get('x-break') === 'yes') ctx.body = { amount: 10n };
            },
          });
          for (let request = 0; request < 2 * poolSize; request++) {
            const failed = await post(url, newKey(`drain-${mode}`), { 'x-break': 'yes' });
            expect(failed.status).toBe(500);
          }
          const normal = await post(url, newKey(`after-drain-${mode}`), {}, AT_ONCE_MS);
          expect(normal.status).toBe(201);
          if (appStore !== store) await appStore.close();
        },
      );
    });

    describe('a response written around Koa is not replayable', () => {
      const writtenAroundKoa = [
        {
          how: 'ctx.respond = false',
          sent: '{"id":"raw"}',
          write: (ctx: Koa.Context) => {
            ctx.respond = false;
            ctx.res.statusCode = 201;
            ctx.res.end('{"id":"raw"}');
          },
        },
        {
          how: "ctx.respond = false and no status (not Koa's default 404)",
          sent: 'raw',
          write: (ctx: Koa.Context) => {
            ctx.respond = false;
            ctx.res.end('raw');
          },
        },
        {
          how: 'headers sent on ctx.res',
          sent: 'proxied',
          write: (ctx: Koa.Context) => {
            ctx.res.writeHead(201, { 'content-type': 'text/plain' });
            ctx.res.end('proxied');
          },
        },
      ];
      it.each(writtenAroundKoa)('answers the retry of a response written with $how by 409 response-not-replayable, not a replay', async ({ write, sent }) => {
        const { url, executions } = await start({ transactional, respond: write });
        const key = newKey(`around-koa-${mode}`);
        expect((await post(url, key)).text).toBe(sent);
        await completed(key);

        expectProblem(await post(url, key), 409, 'notReplayable');
        expect(executions()).toBe(1);
      });
    });

    describe('only the headers the downstream chain set are replayed', () => {
      it("keeps the retry's own request ID, CORS and rate-limit headers, and replays the handler's headers", async () => {
        let remaining = 100;
        const outer: Koa.Middleware = async (ctx, next) => {
          ctx.set('X-Request-Id', randomUUID());
          ctx.set('Access-Control-Allow-Origin', ctx.get('Origin'));
          ctx.set('RateLimit-Remaining', String(--remaining));
          ctx.set('Cache-Control', 'no-store');
          await next();
        };
        const { url } = await start({
          transactional,
          outer,
          respond: (ctx) => {
            ctx.set('Location', '/charges/1');
            ctx.set('Cache-Control', 'private, max-age=60'); // changed by the handler: part of its response
          },
        });
        const key = newKey(`outer-headers-${mode}`);
        const first = await post(url, key, { origin: 'https://a.example' });
        const replay = await post(url, key, { origin: 'https://b.example' });

        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.headers.get('x-request-id')).not.toBe(first.headers.get('x-request-id'));
        expect(replay.headers.get('access-control-allow-origin')).toBe('https://b.example');
        expect(replay.headers.get('ratelimit-remaining')).toBe('98');
        expect(replay.headers.get('location')).toBe('/charges/1');
        expect(replay.headers.get('cache-control')).toBe('private, max-age=60');
        expect(Object.keys((await store.find('', key))!.response!.headers).sort()).toEqual(['cache-control', 'content-type', 'location']);
      });

      it('never stores or replays Authentication-Info or Proxy-Authentication-Info', async () => {
        const { url } = await start({
          transactional,
          respond: (ctx) => {
            ctx.set('Authentication-Info', 'nextnonce="s3cret"');
            ctx.set('Proxy-Authentication-Info', 'nextnonce="s3cret"');
          },
        });
        const key = newKey(`auth-info-${mode}`);
        const first = await post(url, key);
        expect(first.headers.get('authentication-info')).toBe('nextnonce="s3cret"');
        const replay = await post(url, key);
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.headers.get('authentication-info')).toBeNull();
        expect(replay.headers.get('proxy-authentication-info')).toBeNull();
        expect((await store.find('', key))!.response!.headers).not.toHaveProperty('authentication-info');
      });
    });
  });

  describe('a known rollback is not an unknown outcome (transactional mode)', () => {
    it('answers a 500 problem, not 503, when the handler caught a SQL error and left the transaction aborted; the same key runs again at once', async () => {
      const { url, executions } = await start({
        transactional: true,
        respond: async (ctx, n) => {
          // No savepoint: the failed statement aborts the claim's transaction.
          if (n === 1) await ctx.idempotency!.db!.query('SELECT 1 / 0').catch(() => undefined);
        },
      });
      const key = newKey('aborted-transaction');
      const first = await post(url, key);
      expectProblem(first, 500, 'requestFailed');
      expect(JSON.parse(first.text).detail).not.toMatch(/could not be confirmed/);
      expect(await store.find('', key)).toBeUndefined();
      expect(await charges(key)).toBe(0);

      const retry = await post(url, key, {}, AT_ONCE_MS);
      expect(retry.status).toBe(201);
      expect(executions()).toBe(2);
      expect(await charges(key)).toBe(1);
    });

    it('answers a 500 problem saying nothing was committed, not 503 "could not be confirmed", when a deferred constraint fails the COMMIT; the key runs again', async () => {
      // A deferred constraint is checked by COMMIT: the completion succeeds, then Postgres refuses the COMMIT
      // and rolls the transaction back: a known outcome.
      await db.sql.query(`CREATE TABLE "${db.schema}".deferred (id int, CONSTRAINT once UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`);
      const { url, executions } = await start({
        transactional: true,
        respond: (ctx, n) => ctx.idempotency!.db!.query(`INSERT INTO "${db.schema}".deferred (id) VALUES (1)${n === 1 ? ', (1)' : ''}`).then(() => undefined),
      });
      const key = newKey('commit-refused');
      const first = await post(url, key);
      expectProblem(first, 500, 'requestFailed');
      expect(JSON.parse(first.text).detail).toMatch(/nothing was committed/);
      expect(JSON.parse(first.text).detail).not.toMatch(/could not be confirmed/);
      expect(await store.find('', key)).toBeUndefined();

      const retry = await post(url, key, {}, AT_ONCE_MS);
      expect(retry.status).toBe(201);
      expect(executions()).toBe(2);
    });
  });
});
