import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, problemType } from '../src/index.js';
import { PostgresStore, type SqlDatabase } from '../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { countWatches, signal, until } from './helpers/events.js';

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

/** Counts claim statements, to tell a woken waiter from a polling one. */
function countingClaims(inner: SqlDatabase): { database: SqlDatabase; claims: () => number } {
  let claims = 0;
  return {
    database: {
      query: (text, params) => {
        if (text.includes('claimed AS (')) claims++;
        return inner.query(text, params);
      },
      begin: () => inner.begin(),
      listen: (channel, onNotify) => inner.listen(channel, onNotify),
      close: async () => undefined,
    },
    claims: () => claims,
  };
}

describe.each(databaseTargets())("onInProgress: 'wait' (lease mode) on $name", (target) => {
  let db: TestDatabase;
  const servers: Array<{ close(): Promise<void> }> = [];
  const stores: PostgresStore[] = [];

  beforeAll(async () => {
    db = await target.open('waiting');
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });
  afterAll(() => db?.close());

  /**
   * An app whose handler signals `started` and then runs until the test calls `finish()`: a slow first
   * request that ends at the moment the test chooses. `waiters()` counts the duplicates that began to wait.
   */
  async function start(waitMs: number, waitStrategy: 'notify' | 'poll' = 'notify', waitRecheckMs?: number) {
    const counter = countingClaims(db.sql);
    const store = new PostgresStore({ database: counter.database, schema: db.schema, waitStrategy, replayCacheEntries: 0 });
    await store.migrate();
    stores.push(store);
    const waiters = countWatches(store);
    const started = signal();
    const finished = signal();
    let executions = 0;
    const app = new Koa();
    app.silent = true;
    const router = new Router();
    router.post('/slow', idempotency({ store, onInProgress: 'wait', waitMs, waitRecheckMs }), async (ctx) => {
      executions++;
      started.fire();
      await finished.promise;
      ctx.status = 201;
      ctx.body = { execution: executions, at: Date.now() };
    });
    app.use(bodyParser());
    app.use(router.routes());
    const server = await serve(app);
    servers.push(server);
    return {
      url: `${server.url}/slow`,
      executions: () => executions,
      claims: counter.claims,
      started: () => started.promise,
      finish: () => finished.fire(),
      /** Resolves once `count` duplicates wait on the record. */
      waiting: (count: number) => until(() => (waiters() >= count ? true : undefined), `${count} waiting duplicates`, 10_000),
    };
  }

  describe('waiting', () => {
    it('gives every duplicate that arrives during a slow first request its replay', async () => {
      const { url, executions, started, finish, waiting } = await start(10_000);
      const key = newKey('wait');
      const first = postJson(url, { n: 1 }, { key });
      await started();
      const duplicates = Promise.all(Array.from({ length: 8 }, () => postJson(url, { n: 1 }, { key })));
      await waiting(8);
      finish();
      const original = await first;
      expect(original.status).toBe(201);
      for (const duplicate of await duplicates) {
        expect(duplicate.status).toBe(201);
        expect(duplicate.text).toBe(original.text);
        expect(duplicate.headers.get('idempotent-replayed')).toBe('true');
      }
      expect(executions()).toBe(1);
    });

    it("wakes a waiter by NOTIFY between two of its re-reads, which back off (eight claims, not a poller's fourteen)", async () => {
      // Re-reads after 25, 50, 100, 200, 400 and 800 ms: the completion comes once the fifth re-read is done,
      // inside the 800 ms pause, which only the NOTIFY cuts short.
      const { url, claims, started, finish } = await start(10_000, 'notify', 10_000);
      const key = newKey('notify');
      const first = postJson(url, { n: 1 }, { key });
      await started();
      const claimsBefore = claims();
      const waiter = postJson(url, { n: 1 }, { key });
      // Its claim, the re-read after subscribing and five re-reads of the backoff.
      await until(() => (claims() - claimsBefore >= 7 ? true : undefined), 'the waiter in its last pause', 10_000);
      finish();
      const original = await first;
      const completedAtMs = performance.now();
      const replay = await waiter;
      const wakeMs = performance.now() - completedAtMs;
      expect(replay.text).toBe(original.text);
      // First claim, the re-read after subscribing, five re-reads of the backoff, the claim after the wake-up.
      expect(claims() - claimsBefore).toBeLessThanOrEqual(8);
      expect(wakeMs).toBeLessThan(200);
    });

    it('answers 409 when the wait runs out before the first request completes', async () => {
      const { url, executions, started, finish } = await start(200);
      const key = newKey('timeout');
      const first = postJson(url, { n: 1 }, { key });
      await started();
      const startedMs = performance.now();
      const waiter = await postJson(url, { n: 1 }, { key });
      expect(waiter.status).toBe(409);
      expect(JSON.parse(waiter.text).type).toBe(problemType('inProgress'));
      expect(performance.now() - startedMs).toBeGreaterThanOrEqual(190);
      finish();
      expect((await first).status).toBe(201);
      expect(executions()).toBe(1);
    });

    it('does not wait for a request with a different payload: 422 at once', async () => {
      const { url, started, finish } = await start(10_000);
      const key = newKey('mismatch');
      const first = postJson(url, { n: 1 }, { key });
      await started();
      const startedMs = performance.now();
      const other = await postJson(url, { n: 2 }, { key });
      expect(other.status).toBe(422);
      expect(performance.now() - startedMs).toBeLessThan(1_000);
      finish();
      await first;
    });

    it("replays to waiters with the 'poll' strategy too (for connections that cannot LISTEN)", async () => {
      const { url, executions, started, finish, waiting } = await start(10_000, 'poll');
      const key = newKey('poll');
      const first = postJson(url, { n: 1 }, { key });
      await started();
      const waiter = postJson(url, { n: 1 }, { key });
      await waiting(1);
      finish();
      expect((await waiter).text).toBe((await first).text);
      expect(executions()).toBe(1);
    });
  });
});
