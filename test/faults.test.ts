import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql, type Payment } from '../examples/payments/app.js';
import { openExampleDatabase } from '../examples/shared/database.js';
import { idempotency, problemType, type IdempotencyOptions } from '../src/index.js';
import { fromPgPool, PostgresStore } from '../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { leaseLapsed } from './helpers/record-clock.js';
import { observedStore } from './helpers/waiter-harness.js';
import { signal, until } from './helpers/events.js';

/**
 * Network faults between the app and a real Postgres server, injected by a TCP proxy the tests control.
 * The app's pool goes through the proxy; the test's own checks use a direct pool.
 *
 * The app bounds every wait with the pool's own options, as docs/reliability.md recommends:
 * `connectionTimeoutMillis` (a connection, or a free client of an exhausted pool) and `query_timeout`
 * (a statement sent into a slow or silent network).
 */

const APPLICATION_NAME = 'koa-idempotency-faults';
const CONNECTION_TIMEOUT_MS = 1_000;
const QUERY_TIMEOUT_MS = 1_500;
const LEASE_MS = 2_500;
/** No request may take longer than this, whatever the fault (a generous bound: the machine is shared). */
const REQUEST_BOUND_MS = 8_000;

/** A client's pause between two retries: short, since the retry itself checks whether the outcome is final. */
const RETRY_PAUSE_MS = 20;
const RETRY_DEADLINE_MS = 15_000;

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  elapsedMs: number;
}

async function timedPost(url: string, body: unknown, options: { key: string; account?: string }): Promise<Answer> {
  const startedMs = performance.now();
  const response = await postJson(url, body, { account: 'acct_faults', ...options });
  return { ...response, elapsedMs: performance.now() - startedMs };
}

/** A client that retries with the same key until it gets a final answer (anything but 409 and 503). */
async function retryUntilFinal(url: string, body: unknown, options: { key: string; account?: string }): Promise<Answer & { attempts: number }> {
  let attempts = 0;
  return until(
    async () => {
      attempts++;
      const answer = await timedPost(url, body, options);
      if (answer.status !== 409 && answer.status !== 503) return { ...answer, attempts };
      await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
      return undefined;
    },
    `a final answer for key ${options.key}`,
    RETRY_DEADLINE_MS,
  );
}

describe('Faults between the app and Postgres', () => {
  const schema = uniqueSchema('faults');
  const pools: pg.Pool[] = [];
  let admin: pg.Pool;
  let proxy: TcpProxy;

  /** A pool of the app, through the proxy, with bounded waits. */
  function appPool(overrides: pg.PoolConfig = {}): pg.Pool {
    const pool = new pg.Pool({
      connectionString: proxy.urlFor(DATABASE_URL),
      max: 4,
      connectionTimeoutMillis: CONNECTION_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      application_name: APPLICATION_NAME,
      ...overrides,
    });
    pool.on('error', () => undefined); // an idle client whose connection was cut; the pool replaces it
    pools.push(pool);
    return pool;
  }

  /**
   * The store of an app. `preparedStatements: false` when a test cuts on a store statement's text: a
   * prepared statement's text crosses the wire once per connection, so the proxy could not see it again.
   */
  function storeOn(pool: pg.Pool, options: { preparedStatements?: boolean } = {}): PostgresStore {
    return new PostgresStore({ pool, schema, replayCacheEntries: 0, ...options });
  }

  async function paymentsServer(
    options: { pool?: pg.Pool; preparedStatements?: boolean; afterInsert?: (payment: Payment) => void | Promise<void>; idempotency?: Partial<IdempotencyOptions> } = {},
  ) {
    const pool = options.pool ?? appPool();
    const app = createPaymentsApp({
      store: storeOn(pool, { preparedStatements: options.preparedStatements }),
      sql: fromPgPool(pool),
      schema,
      afterInsert: options.afterInsert,
      idempotency: { leaseMs: LEASE_MS, ...options.idempotency },
    });
    app.silent = true;
    return serve(app);
  }

  /** A lease-mode app whose handler counts its executions per key and may run a fault in the middle. */
  async function leaseServer(options: { during?: (key: string, attempt: number) => Promise<void>; preparedStatements?: boolean } = {}) {
    const executions = new Map<string, number>();
    const app = new Koa();
    app.silent = true;
    const router = new Router();
    const store = storeOn(appPool(), { preparedStatements: options.preparedStatements });
    router.post('/operations', idempotency({ store, leaseMs: LEASE_MS, required: true }), async (ctx) => {
      const key = ctx.idempotency!.key;
      executions.set(key, (executions.get(key) ?? 0) + 1);
      await options.during?.(key, ctx.idempotency!.attempt);
      ctx.status = 201;
      ctx.body = { key, attempt: ctx.idempotency!.attempt };
    });
    app.use(bodyParser());
    app.use(router.routes());
    const server = await serve(app);
    return { ...server, executions };
  }

  async function paymentsOf(account: string): Promise<string[]> {
    const { rows } = await admin.query<{ id: string }>(`SELECT id::text FROM "${schema}".payments WHERE account = $1`, [account]);
    return rows.map((row) => row.id);
  }

  /** After the faults: no record in progress, no transaction left open by the app. */
  async function expectNothingStuck(): Promise<void> {
    const { rows: records } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".idempotency_records WHERE status = 'in_progress'`);
    expect(records[0]!.n).toBe(0);
    // A cut connection's backend ends (and rolls back) once Postgres notices.
    await until(async () => ((await openTransactions()) === 0 ? true : undefined), 'no transaction of the app left open', 5_000);
  }

  async function openTransactions(): Promise<number> {
    const { rows } = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'`,
      [APPLICATION_NAME],
    );
    return rows[0]!.n;
  }

  async function appSessions(): Promise<number[]> {
    const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [APPLICATION_NAME]);
    return rows.map((row) => row.pid);
  }

  /** Cuts every connection of the app and returns once Postgres has ended each session the cut reached. */
  async function cutAndObserve(): Promise<void> {
    const before = await appSessions();
    proxy.cutAll();
    await until(async () => ((await appSessions()).some((pid) => before.includes(pid)) ? undefined : true), 'the cut sessions to end in Postgres', 5_000);
  }

  beforeAll(async () => {
    admin = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
    await admin.query(`CREATE SCHEMA "${schema}"`);
    await new PostgresStore({ pool: admin, schema }).migrate();
    for (const statement of paymentsSchemaSql(schema).split(';\n')) await admin.query(statement);
    const target = new URL(DATABASE_URL);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  });

  afterEach(() => proxy.reset());

  afterAll(async () => {
    await proxy?.close();
    await Promise.all(pools.map((pool) => pool.end().catch(() => undefined)));
    await admin?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin?.end();
  });

  describe('Postgres unreachable before the claim', () => {
    it.each([
      ['refused', (p: TcpProxy) => (p.refuse(), p.cutAll())],
      ['a black hole', (p: TcpProxy) => (p.blackHole(), p.cutAll())],
    ])('answers 503 problem with Retry-After, never runs the handler, and recovers when Postgres is %s', async (fault, inject) => {
      const server = await leaseServer();
      const key = `while-down-${fault.replaceAll(' ', '-')}`;
      try {
        expect((await timedPost(`${server.url}/operations`, { n: 1 }, { key: 'warm-up' })).status).toBe(201);
        inject(proxy);

        const down = await timedPost(`${server.url}/operations`, { n: 2 }, { key });

        expect(down.status).toBe(503);
        expect(down.headers.get('retry-after')).toBe('5');
        expect(JSON.parse(down.text).type).toBe(problemType('storeUnavailable'));
        expect(down.elapsedMs).toBeLessThan(REQUEST_BOUND_MS);
        expect(server.executions.get(key)).toBeUndefined();

        proxy.pass();
        const after = await retryUntilFinal(`${server.url}/operations`, { n: 2 }, { key });
        expect(after.status).toBe(201);
        expect(after.headers.get('idempotent-replayed')).toBeNull();
        expect(server.executions.get(key)).toBe(1);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it('answers 503 in transactional mode too, and no payment is written', async () => {
      const server = await paymentsServer();
      try {
        proxy.refuse();
        proxy.cutAll();
        const down = await timedPost(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key: 'tx-down', account: 'acct_tx_down' });
        expect(down.status).toBe(503);
        expect(down.headers.get('retry-after')).toBe('5');
        expect(await paymentsOf('acct_tx_down')).toEqual([]);

        proxy.pass();
        const after = await retryUntilFinal(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key: 'tx-down', account: 'acct_tx_down' });
        expect(after.status).toBe(201);
        expect(await paymentsOf('acct_tx_down')).toEqual([JSON.parse(after.text).id]);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });

  describe('connection cut during the handler, lease mode', () => {
    it('lets a retry take the record over once the lease runs out', async () => {
      const server = await leaseServer({
        during: async (key, attempt) => {
          if (key !== 'cut-in-handler' || attempt !== 1) return;
          proxy.refuse();
          proxy.cutAll();
        },
      });
      try {
        // The handler ran; its completion was lost with the connection, so its answer goes out unrecorded.
        const first = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(first.status).toBe(201);
        proxy.pass();

        const early = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(early.status).toBe(409);
        expect(Number(early.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);

        await leaseLapsed(admin, `"${schema}".idempotency_records`, 'cut-in-handler');
        const takeover = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(takeover.status).toBe(201);
        expect(JSON.parse(takeover.text)).toEqual({ key: 'cut-in-handler', attempt: 2 });

        const replay = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.text).toBe(takeover.text);
        expect(server.executions.get('cut-in-handler')).toBe(2);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });

  describe('connection cut in transactional mode', () => {
    it('leaves one payment when the COMMIT never reaches Postgres', async () => {
      const server = await paymentsServer();
      try {
        const cut = proxy.cutWhen('COMMIT; SELECT pg_advisory_unlock_all()', 'before');
        const first = await timedPost(`${server.url}/payments`, { amount: 250, currency: 'EUR' }, { key: 'commit-dropped', account: 'acct_commit_dropped' });
        await cut;
        expect(first.status).toBe(503);
        expect(await paymentsOf('acct_commit_dropped')).toEqual([]);

        const retry = await retryUntilFinal(`${server.url}/payments`, { amount: 250, currency: 'EUR' }, { key: 'commit-dropped', account: 'acct_commit_dropped' });
        expect(retry.status).toBe(201);
        expect(retry.headers.get('idempotent-replayed')).toBeNull();
        expect(await paymentsOf('acct_commit_dropped')).toEqual([JSON.parse(retry.text).id]);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it('leaves one payment, and replays it, when the answer to the COMMIT is lost', async () => {
      const server = await paymentsServer();
      try {
        const cut = proxy.cutWhen('COMMIT; SELECT pg_advisory_unlock_all()', 'after');
        const first = await timedPost(`${server.url}/payments`, { amount: 300, currency: 'EUR' }, { key: 'commit-lost', account: 'acct_commit_lost' });
        await cut;
        expect(first.status).toBe(503);
        expect(JSON.parse(first.text).detail).toMatch(/could not be confirmed/);

        const retry = await retryUntilFinal(`${server.url}/payments`, { amount: 300, currency: 'EUR' }, { key: 'commit-lost', account: 'acct_commit_lost' });
        expect(retry.status).toBe(201);
        expect(retry.headers.get('idempotent-replayed')).toBe('true');
        expect(await paymentsOf('acct_commit_lost')).toEqual([JSON.parse(retry.text).id]);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it('regression: a connection cut while a transactional handler holds its client does not crash the process', async () => {
      // pg-pool leaves a checked-out client without an 'error' listener; the cut used to be an uncaught exception.
      const crashes: unknown[] = [];
      const onUncaught = (error: unknown) => crashes.push(error);
      process.on('uncaughtException', onUncaught);
      let armed = true;
      const server = await paymentsServer({
        afterInsert: async () => {
          if (!armed) return;
          armed = false;
          await cutAndObserve(); // the handler is between queries when its connection goes
        },
      });
      try {
        const first = await timedPost(`${server.url}/payments`, { amount: 5, currency: 'EUR' }, { key: 'idle-cut', account: 'acct_idle_cut' });
        expect(first.status).toBe(503);
        expect(crashes).toEqual([]);
        expect(await paymentsOf('acct_idle_cut')).toEqual([]);
        const retry = await retryUntilFinal(`${server.url}/payments`, { amount: 5, currency: 'EUR' }, { key: 'idle-cut', account: 'acct_idle_cut' });
        expect(await paymentsOf('acct_idle_cut')).toEqual([JSON.parse(retry.text).id]);
      } finally {
        process.off('uncaughtException', onUncaught);
        await server.close();
      }
    });

    it('never leaves two payments for one key, whatever the cut point and however the client retries', async () => {
      // Each fault is injected during the first attempt of its own key; the client then retries to a final answer.
      let fired = false;
      const cutWhen = (pattern: string, when: 'before' | 'after') => void proxy.cutWhen(pattern, when).then(() => (fired = true));
      const faults: Array<[string, () => void]> = [
        ['claim dropped', () => cutWhen('pg_try_advisory_xact_lock', 'before')],
        ['claim answer lost', () => cutWhen('pg_try_advisory_xact_lock', 'after')],
        ['insert dropped', () => cutWhen('INSERT INTO', 'before')],
        ['completion dropped', () => cutWhen(`status = 'completed'`, 'before')],
        ['completion answer lost', () => cutWhen(`status = 'completed'`, 'after')],
        ['commit dropped', () => cutWhen('COMMIT; SELECT pg_advisory_unlock_all()', 'before')],
        ['commit answer lost', () => cutWhen('COMMIT; SELECT pg_advisory_unlock_all()', 'after')],
      ];
      let inHandler: 'cut' | 'terminate' | undefined;
      const server = await paymentsServer({
        preparedStatements: false,
        afterInsert: async () => {
          const fault = inHandler;
          inHandler = undefined;
          if (fault === 'cut') {
            proxy.refuse();
            await cutAndObserve();
            proxy.pass();
          } else if (fault === 'terminate') {
            // What a failover or an administrator does: Postgres itself ends the app's sessions.
            await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [APPLICATION_NAME]);
          }
          fired ||= fault !== undefined;
        },
      });
      const rounds = [
        ...faults.map(([name, inject]) => ({ name, inject })),
        { name: 'cut in the handler', inject: () => void (inHandler = 'cut') },
        { name: 'sessions terminated by Postgres in the handler', inject: () => void (inHandler = 'terminate') },
      ];
      try {
        for (let round = 0; round < 3; round++) {
          for (const [index, fault] of rounds.entries()) {
            const account = `acct_cut_${round}_${index}`;
            const key = `cut-${round}-${index}`;
            fired = false;
            fault.inject();
            const first = await timedPost(`${server.url}/payments`, { amount: 10 + index, currency: 'EUR' }, { key, account });
            proxy.reset();
            expect(fired, `${fault.name} fired`).toBe(true);
            // A dropped payment INSERT fails the handler itself, which the example answers with its own 500.
            expect(fault.name === 'insert dropped' ? [201, 409, 500, 503] : [201, 409, 503], fault.name).toContain(first.status);

            const final = await retryUntilFinal(`${server.url}/payments`, { amount: 10 + index, currency: 'EUR' }, { key, account });
            expect(final.status, fault.name).toBe(201);
            expect(await paymentsOf(account), fault.name).toEqual([JSON.parse(final.text).id]);
            // A second retry after the final answer is a replay of the same payment.
            const again = await timedPost(`${server.url}/payments`, { amount: 10 + index, currency: 'EUR' }, { key, account });
            expect(again.text, fault.name).toBe(final.text);
          }
        }
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });

  describe('claim answer lost, lease mode', () => {
    it('leaves the record to its lease: 409 with Retry-After until then, then one execution', async () => {
      const server = await leaseServer({ preparedStatements: false });
      try {
        // Postgres commits the claim (a single statement), but its answer never reaches the app.
        const cut = proxy.cutWhen('DO NOTHING', 'after');
        const first = await timedPost(`${server.url}/operations`, {}, { key: 'claim-lost' });
        await cut;
        expect(first.status).toBe(503);
        expect(server.executions.get('claim-lost')).toBeUndefined();

        const early = await timedPost(`${server.url}/operations`, {}, { key: 'claim-lost' });
        expect(early.status).toBe(409);
        const final = await retryUntilFinal(`${server.url}/operations`, {}, { key: 'claim-lost' });
        expect(final.status).toBe(201);
        expect(server.executions.get('claim-lost')).toBe(1);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });

  describe('waiting duplicates (onInProgress: wait)', () => {
    it('regression: duplicates are still woken at once after the LISTEN connection was cut', async () => {
      const pool = appPool();
      const store = new PostgresStore({ pool, schema, replayCacheEntries: 0 });
      const observed = observedStore(store);
      const app = new Koa();
      app.silent = true;
      const router = new Router();
      const handlerStarted = new Map<string, () => void>();
      const handlerMayFinish = new Map<string, Promise<void>>();
      router.post('/slow', idempotency({ store: observed.store, onInProgress: 'wait', waitMs: 6_000 }), async (ctx) => {
        handlerStarted.get(ctx.idempotency!.key)?.();
        await handlerMayFinish.get(ctx.idempotency!.key); // held until the duplicate waits on it
        ctx.status = 201;
        ctx.body = { key: ctx.idempotency!.key };
      });
      app.use(bodyParser());
      app.use(router.routes());
      const server = await serve(app);
      try {
        /**
         * A first request, and a duplicate sent once the first's handler runs; the handler finishes once the
         * duplicate waits. Returns how long the duplicate took from the handler's end to its own answer.
         */
        const duplicateWaitMs = async (key: string) => {
          const running = signal();
          const mayFinish = signal();
          handlerStarted.set(key, () => running.fire());
          handlerMayFinish.set(key, mayFinish.promise);
          const first = timedPost(`${server.url}/slow`, {}, { key });
          await Promise.race([running.promise, first]); // a first request that fails before its handler must not hang the test
          const waiting = observed.waiting();
          const duplicate = timedPost(`${server.url}/slow`, {}, { key });
          await Promise.race([waiting, duplicate]);
          const releasedAtMs = performance.now();
          mayFinish.fire();
          expect((await first).status).toBe(201);
          const answer = await duplicate;
          expect(answer.status).toBe(201);
          expect(answer.headers.get('idempotent-replayed')).toBe('true');
          return performance.now() - releasedAtMs;
        };
        expect(await duplicateWaitMs('wait-before-cut')).toBeLessThan(3_000);
        await cutAndObserve(); // the pool's clients and the store's LISTEN connection go
        expect(await duplicateWaitMs('wait-after-cut-1')).toBeLessThan(3_000);
        expect(await duplicateWaitMs('wait-after-cut-2')).toBeLessThan(3_000);
      } finally {
        await server.close();
        await store.close();
      }
    });
  });

  describe('the example app', () => {
    it('regression: the example pool survives Postgres dropping an idle connection', async () => {
      const crashes: unknown[] = [];
      const onUncaught = (error: unknown) => crashes.push(error);
      process.on('uncaughtException', onUncaught);
      const database = await openExampleDatabase({ DATABASE_URL: proxy.urlFor(DATABASE_URL) });
      try {
        await database.sql.query('SELECT 1');
        await cutAndObserve(); // the pool's idle client loses its connection
        expect(crashes).toEqual([]);
        expect((await database.sql.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      } finally {
        process.off('uncaughtException', onUncaught);
        await database.close();
      }
    });
  });

  describe('pool exhausted', () => {
    it('bounds the wait for a client and answers 503, never hangs, and runs no handler it refused', async () => {
      let executions = 0;
      let answered = 0;
      const handlersMayFinish = signal();
      const pool = appPool({ max: 2, connectionTimeoutMillis: 300 });
      const server = await paymentsServer({
        pool,
        afterInsert: async () => {
          executions++;
          await handlersMayFinish.promise; // holds the transaction's client, as a slow handler would
        },
      });
      try {
        const body = { amount: 500, currency: 'EUR' };
        const sent = Array.from({ length: 8 }, (_, i) =>
          timedPost(`${server.url}/payments`, body, { key: `busy-pool-${i}`, account: `acct_pool_${i}` }).finally(() => answered++),
        );
        // The handlers hold their clients until every other request has had its answer (a refusal, once its wait ran out).
        await until(() => (answered + executions === sent.length ? true : undefined), 'every request refused or in its handler', REQUEST_BOUND_MS);
        handlersMayFinish.fire();
        const answers = await Promise.all(sent);
        const statuses = answers.map((answer) => answer.status);
        expect(statuses.every((status) => status === 201 || status === 503)).toBe(true);
        expect(statuses.filter((status) => status === 503).length).toBeGreaterThan(0);
        expect(statuses.filter((status) => status === 201).length).toBe(executions);
        for (const answer of answers) expect(answer.elapsedMs).toBeLessThan(REQUEST_BOUND_MS);

        // The clients retry their 503s: every payment ends up made exactly once.
        for (let i = 0; i < 8; i++) {
          const final = await retryUntilFinal(`${server.url}/payments`, body, { key: `busy-pool-${i}`, account: `acct_pool_${i}` });
          expect(final.status).toBe(201);
          expect(await paymentsOf(`acct_pool_${i}`)).toEqual([JSON.parse(final.text).id]);
        }
        expect(executions).toBe(8);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });

  describe('slow Postgres', () => {
    it('still answers every request, correctly, under moderate latency', async () => {
      const server = await leaseServer();
      try {
        proxy.latencyMs = 40;
        const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => timedPost(`${server.url}/operations`, {}, { key: `slow-ok-${i}` })));
        expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill(201));
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it.each([
      ['lease', false],
      ['transactional', true],
    ])('fires the query timeout and answers 503 within its bound when latency exceeds it (%s mode)', async (mode, transactional) => {
      const server = await paymentsServer({ idempotency: { transactional } });
      const account = `acct_slow_${mode}`;
      try {
        proxy.latencyMs = QUERY_TIMEOUT_MS + 500;
        const body = { amount: 700, currency: 'EUR' };
        const answers = await Promise.all(Array.from({ length: 3 }, (_, i) => timedPost(`${server.url}/payments`, body, { key: `slow-${mode}-${i}`, account })));
        for (const answer of answers) {
          expect(answer.status).toBe(503);
          expect(answer.elapsedMs).toBeLessThan(REQUEST_BOUND_MS);
        }

        proxy.latencyMs = 0;
        const finals = [];
        for (let i = 0; i < 3; i++) finals.push(await retryUntilFinal(`${server.url}/payments`, body, { key: `slow-${mode}-${i}`, account }));
        expect(finals.map((answer) => answer.status)).toEqual([201, 201, 201]);
        expect((await paymentsOf(account)).sort()).toEqual(finals.map((answer) => JSON.parse(answer.text).id).sort());
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });
});
