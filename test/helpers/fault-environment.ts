import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql, type Payment } from '../../examples/payments/app.js';
import { idempotency, type IdempotencyOptions } from '../../src/index.js';
import { fromPgPool, PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from './databases.js';
import { postJson, serve } from './http.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';
import { until } from './events.js';

/**
 * What the fault tests (test/faults-*.test.ts) share: network faults between the app and a real Postgres
 * server, injected by a TCP proxy the tests control. The app's pool goes through the proxy; the test's own
 * checks use a direct pool.
 *
 * The app bounds every wait with the pool's own options, as docs/reliability.md recommends:
 * `connectionTimeoutMillis` (a connection, or a free client of an exhausted pool) and `query_timeout`
 * (a statement sent into a slow or silent network).
 */

export const APPLICATION_NAME = 'koa-idempotency-faults';
const CONNECTION_TIMEOUT_MS = 1_000;
export const QUERY_TIMEOUT_MS = 1_500;
const LEASE_MS = 2_500;
/** No request may take longer than this, whatever the fault (a generous bound: the machine is shared). */
export const REQUEST_BOUND_MS = 8_000;

/** A client's pause between two retries: short, since the retry itself checks whether the outcome is final. */
const RETRY_PAUSE_MS = 20;
const RETRY_DEADLINE_MS = 15_000;

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  elapsedMs: number;
}

export async function timedPost(url: string, body: unknown, options: { key: string; account?: string }): Promise<Answer> {
  const startedMs = performance.now();
  const response = await postJson(url, body, { account: 'acct_faults', ...options });
  return { ...response, elapsedMs: performance.now() - startedMs };
}

/** A client that retries with the same key until it gets a final answer (anything but 409 and 503). */
export async function retryUntilFinal(url: string, body: unknown, options: { key: string; account?: string }): Promise<Answer & { attempts: number }> {
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

/**
 * Opens the fault environment of one test file, in the describe block that calls it: its own schema (named
 * after `prefix`) with the records and payments tables, and a TCP proxy to the Postgres server.
 * `proxy` and `admin` (a direct pool) are set once the block's beforeAll has run.
 */
export function faultEnvironment(prefix: string) {
  const schema = uniqueSchema(prefix);
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

  return {
    schema,
    get admin() {
      return admin;
    },
    get proxy() {
      return proxy;
    },
    appPool,
    paymentsServer,
    leaseServer,
    paymentsOf,
    expectNothingStuck,
    cutAndObserve,
  };
}
