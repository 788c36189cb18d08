import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { beforeAll, describe, expect, it } from 'vitest';
import { openExampleDatabase } from '../examples/shared/database.js';
import { idempotency } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { DATABASE_URL } from './helpers/databases.js';
import { faultEnvironment, timedPost } from './helpers/fault-environment.js';
import { serve } from './helpers/http.js';
import type { TcpProxy } from './helpers/tcp-proxy.js';
import { observedStore } from './helpers/waiter-harness.js';
import { signal } from './helpers/events.js';

/** Idle connections cut under the app (the LISTEN connection, an idle pool client): nothing crashes, waiters still wake. (test/helpers/fault-environment.ts: the proxy, the apps and the checks.) */
describe('Faults between the app and Postgres', () => {
  const faults = faultEnvironment('faults_idle_cut');
  const { schema, appPool, cutAndObserve } = faults;
  let proxy: TcpProxy;
  beforeAll(() => {
    ({ proxy } = faults);
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
        const source = database.storeSource;
        if (!('pool' in source)) throw new Error('the example database is a Postgres pool here');
        const lost = new Promise((resolve) => source.pool.once('error', resolve));
        await cutAndObserve(); // the pool's idle client loses its connection
        // Postgres ended the session before the client's socket heard of it: a query in between would get the dead client.
        await lost;
        expect(crashes).toEqual([]);
        expect((await database.sql.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      } finally {
        process.off('uncaughtException', onUncaught);
        await database.close();
      }
    });
  });
});
