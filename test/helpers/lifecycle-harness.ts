import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { idempotency, problemType, type IdempotencyOptions, type IdempotencyStore, type ProblemName } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { rowsWithKey, type DatabaseTarget, type TestDatabase } from './databases.js';
import { serve } from './http.js';
import { until } from './events.js';

/**
 * What the regressions of issue 14 (test/regressions/answers-after-the-handler-*.test.ts) share: an app whose
 * handler writes a charge (transactional mode) then answers what the test says, in lease and in transactional
 * mode, and the checks on its answers.
 */

/** An answer that takes longer than this is a hang (a leaked transaction, lock or pool client). */
export const ANSWER_BOUND_MS = 4_000;
/** "At once": a retry that waits for a lock timeout or a lease would take seconds. */
export const AT_ONCE_MS = 2_000;

let keySeq = 0;
export const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

export type Answer = Awaited<ReturnType<typeof post>>;

/** POST with a key; a hang fails the request (AbortSignal) instead of the whole test's timeout. */
export async function post(url: string, key: string, headers: Record<string, string> = {}, timeoutMs = ANSWER_BOUND_MS) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
    body: '{"amount":10}',
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

export function circular(): unknown {
  const body: Record<string, unknown> = { id: 1 };
  body.self = body;
  return body;
}

export const MODES = [
  { mode: 'lease', transactional: false },
  { mode: 'transactional', transactional: true },
] as const;

/**
 * Opens the schema of one test file on `target` (named after `prefix`, with a charges table), in the describe
 * block that calls it. `db` and `store` are set once the block's beforeAll has run.
 */
export function lifecycleHarness(target: DatabaseTarget, prefix: string) {
  let db: TestDatabase;
  let store: PostgresStore;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open(prefix);
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

  return {
    get db() {
      return db;
    },
    get store() {
      return store;
    },
    start,
    charges,
    completed,
    expectProblem,
  };
}
