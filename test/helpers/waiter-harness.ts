import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { idempotency, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { serve } from './http.js';

/**
 * What the waiter tests share: a store that reports when a waiting duplicate starts to wait, and an app whose
 * handler the test scripts per execution. Each wake-up is measured from an observable event (a response,
 * a handler starting), never from a sleep.
 */

/** A promise with its resolver: an event a test waits for. */
export interface Signal<T = void> {
  promise: Promise<T>;
  fire(value: T): void;
}

export function signal<T = void>(): Signal<T> {
  let fire!: (value: T) => void;
  const promise = new Promise<T>((resolve) => (fire = resolve));
  return { promise, fire };
}

/** Polls `check` every 10 ms until it returns a value (a row state, a lock in pg_locks); fails after `timeoutMs`. */
export async function until<T>(check: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const deadlineMs = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > deadlineMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * The store, with `waiting` fired each time a duplicate starts a wait (its watch's next()): by then it has
 * registered and re-read the record, so a change after this moment must reach it some other way.
 */
export function observedStore(store: PostgresStore): { store: IdempotencyStore; waiting: () => Promise<void> } {
  let waits: Signal = signal();
  return {
    store: {
      claim: (request) => store.claim(request),
      claimInTransaction: (request) => store.claimInTransaction(request),
      complete: (lease, completion) => store.complete(lease, completion),
      release: (lease) => store.release(lease),
      renewLease: (lease, leaseMs) => store.renewLease(lease, leaseMs),
      saveStep: (lease, name, result, db) => store.saveStep(lease, name, result, db),
      watch: async (scope, key) => {
        const watch = await store.watch(scope, key);
        return {
          next: (timeoutMs) => {
            const result = watch.next(timeoutMs);
            waits.fire();
            return result;
          },
          close: () => watch.close(),
        };
      },
    },
    /** Resolves at the next start of a wait (or the one that already happened since the last call). */
    waiting: async () => {
      await waits.promise;
      waits = signal();
    },
  };
}

/** Counts the duplicates that began to wait on `store` (each watch() that returned); for a test to act once they wait. */
export function countWatches(store: PostgresStore): () => number {
  let watches = 0;
  const watch = store.watch.bind(store);
  store.watch = async (scope, key) => {
    const change = await watch(scope, key);
    watches++;
    return change;
  };
  return () => watches;
}

export type Handler = (ctx: Koa.Context, execution: number) => Promise<void>;

/** A Koa app with one idempotent route whose handler is `handler(ctx, execution)`; 201 with the execution number. */
export async function waiterApp(options: IdempotencyOptions, handler: Handler): Promise<{ url: string; close(): Promise<void> }> {
  let executions = 0;
  const app = new Koa();
  app.silent = true;
  const router = new Router();
  router.post('/op', idempotency(options), async (ctx) => {
    const execution = ++executions;
    await handler(ctx, execution);
    ctx.status = 201;
    ctx.body = { execution };
  });
  app.use(bodyParser());
  app.use(router.routes());
  const server = await serve(app);
  return { url: `${server.url}/op`, close: () => server.close() };
}

/** A POST timed to its answer: `answeredAtMs` on the performance.now() clock. */
export async function post(url: string, key: string): Promise<{ status: number; body: string; replayed: boolean; answeredAtMs: number }> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: '{"n":1}' });
  const body = await response.text();
  return { status: response.status, body, replayed: response.headers.get('idempotent-replayed') === 'true', answeredAtMs: performance.now() };
}

/** Prints a measured figure, so a run's log carries the bound each case reached. */
export function report(what: string, ms: number): void {
  console.info(`[wake-up] ${what}: ${Math.round(ms)} ms`);
}
