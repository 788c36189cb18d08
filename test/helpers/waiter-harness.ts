import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { idempotency, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { serve } from './http.js';
import { signal, type Signal } from './events.js';

/**
 * What the waiter tests share: a store that reports when a waiting duplicate starts to wait, and an app whose
 * handler the test scripts per execution. Each wake-up is measured from an observable event (a response,
 * a handler starting), never from a sleep.
 */

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
