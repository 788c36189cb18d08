import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type IdempotencyOptions } from '../src/index.js';
import { type PostgresStore } from '../src/entries/postgres.js';
import { databaseTargets, rowsWithKey, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { countWatches, signal, until } from './helpers/events.js';

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe.each(databaseTargets({ pipelined: true }))('transactional mode on $name', (target) => {
  let db: TestDatabase;
  let store: PostgresStore;
  const servers: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    db = await target.open('transactional');
    store = await db.store();
    await db.sql.query(`CREATE TABLE "${db.schema}".charges (id serial PRIMARY KEY, key text NOT NULL, amount int NOT NULL)`);
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  afterAll(() => db?.close());

  /** POST /charges writes one row through ctx.idempotency.db, then answers what `outcome` says. */
  async function start(outcome: (ctx: Koa.Context, n: number) => void | Promise<void> = () => undefined, options: Partial<IdempotencyOptions> = {}) {
    let executions = 0;
    let arrivals = 0;
    const app = new Koa();
    app.silent = true;
    app.use(async (ctx, next) => {
      arrivals++;
      await next();
    });
    const router = new Router();
    router.post('/charges', idempotency({ store, transactional: true, scope: (ctx) => ctx.get('Authorization'), ...options }), async (ctx) => {
      executions++;
      const amount = (ctx.request.body as { amount: number }).amount;
      const { rows } = await ctx.idempotency!.db!.query<{ id: number }>(`INSERT INTO "${db.schema}".charges (key, amount) VALUES ($1, $2) RETURNING id`, [
        ctx.idempotency!.key,
        amount,
      ]);
      ctx.status = 201;
      ctx.body = { id: rows[0]!.id, amount };
      await outcome(ctx, executions);
    });
    app.use(bodyParser());
    app.use(router.routes());
    const server = await serve(app);
    servers.push(server);
    return { url: `${server.url}/charges`, executions: () => executions, arrivals: () => arrivals };
  }

  const charges = (key: string) => rowsWithKey(db.sql, `"${db.schema}".charges`, key);

  /** A handler outcome that signals `started`, then holds its transaction open until the test calls `finish()`. */
  function heldOpen() {
    const started = signal();
    const finished = signal();
    const outcome = async () => {
      started.fire();
      await finished.promise;
    };
    return { outcome, started: () => started.promise, finish: () => finished.fire() };
  }

  async function record(key: string) {
    return store.find('Bearer a', key);
  }

  describe('commit and rollback', () => {
    it('commits the business row and the stored response together, and replays without a second row', async () => {
      const { url, executions } = await start();
      const key = newKey('commit');
      const first = await postJson(url, { amount: 10 }, { key, account: 'a' });
      const replay = await postJson(url, { amount: 10 }, { key, account: 'a' });
      expect(first.status).toBe(201);
      expect(replay.text).toBe(first.text);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(executions()).toBe(1);
      expect(await charges(key)).toBe(1);
      expect((await record(key))?.status).toBe('completed');
    });

    it('rolls back the business row and the record when the handler throws; the retry runs cleanly', async () => {
      const { url, executions } = await start((_ctx, n) => {
        if (n === 1) throw new Error('provider exploded');
      });
      const key = newKey('throw');
      const first = await postJson(url, { amount: 10 }, { key, account: 'a' });
      expect(first.status).toBe(500);
      expect(await charges(key)).toBe(0);
      expect(await record(key)).toBeUndefined();
      const retry = await postJson(url, { amount: 10 }, { key, account: 'a' });
      expect(retry.status).toBe(201);
      expect(executions()).toBe(2);
      expect(await charges(key)).toBe(1);
    });

    it('rolls back everything on a 5xx answer', async () => {
      const { url } = await start((ctx, n) => {
        if (n === 1) ctx.status = 502;
      });
      const key = newKey('5xx');
      expect((await postJson(url, { amount: 10 }, { key, account: 'a' })).status).toBe(502);
      expect(await charges(key)).toBe(0);
      expect(await record(key)).toBeUndefined();
      expect((await postJson(url, { amount: 10 }, { key, account: 'a' })).status).toBe(201);
      expect(await charges(key)).toBe(1);
    });

    it('stores a 4xx together with whatever the handler wrote', async () => {
      const { url } = await start((ctx) => {
        ctx.status = 402;
      });
      const key = newKey('4xx');
      await postJson(url, { amount: 10 }, { key, account: 'a' });
      const again = await postJson(url, { amount: 10 }, { key, account: 'a' });
      expect(again.status).toBe(402);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(await charges(key)).toBe(1);
    });

    it('answers 422 to a different payload under the same key, writing nothing', async () => {
      const { url } = await start();
      const key = newKey('mismatch');
      await postJson(url, { amount: 10 }, { key, account: 'a' });
      const other = await postJson(url, { amount: 11 }, { key, account: 'a' });
      expect(other.status).toBe(422);
      expect(await charges(key)).toBe(1);
    });
  });

  // PGlite is one connection: the duplicate's transaction waits for the first one's, by design.
  const oneConnection = target.name === 'PGlite';
  describe.skipIf(oneConnection)(
    `concurrent duplicates${oneConnection ? ' (skipped on PGlite: one connection, a second transaction waits for the first by design)' : ''}`,
    () => {
      it('answers a duplicate 409 at once instead of blocking on the first transaction', async () => {
        const held = heldOpen();
        const { url, executions } = await start(held.outcome);
        const key = newKey('busy');
        const finished: string[] = [];
        const first = postJson(url, { amount: 10 }, { key, account: 'a' }).then((r) => (finished.push('first'), r));
        await held.started();
        const startedMs = performance.now();
        const answer = postJson(url, { amount: 10 }, { key, account: 'a' }).then((r) => (finished.push('duplicate'), r));
        // The first transaction stays open until the duplicate answers; one blocked on it is let go at a
        // deadline, so that the test fails on the duplicate's time rather than hanging.
        await Promise.race([answer, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
        held.finish();
        const duplicate = await answer;
        const duplicateMs = performance.now() - startedMs;
        expect(duplicate.status).toBe(409);
        expect(duplicate.headers.get('retry-after')).toBe('1');
        expect(finished).toEqual(['duplicate']);
        expect(duplicateMs).toBeLessThan(1_000);
        expect((await first).status).toBe(201);
        expect(executions()).toBe(1);
        expect(await charges(key)).toBe(1);
      });
    },
  );

  describe('waiting duplicates', () => {
    it('holds duplicates until the first transaction commits, then replays its response to each', async () => {
      const held = heldOpen();
      const waiters = countWatches(store);
      const { url, executions, arrivals } = await start(held.outcome, { onInProgress: 'wait', waitMs: 10_000 });
      const key = newKey('wait');
      const first = postJson(url, { amount: 10 }, { key, account: 'a' });
      await held.started();
      const waitStartedMs = performance.now();
      const answers = Promise.all(Array.from({ length: 5 }, () => postJson(url, { amount: 10 }, { key, account: 'a' })));
      // The first transaction commits once the five wait: on a server, each watches the record; on PGlite's one
      // connection, each has arrived and queues behind the open transaction.
      await until(() => ((oneConnection ? arrivals() === 6 : waiters() >= 5) ? true : undefined), 'five waiting duplicates', 10_000);
      held.finish();
      const duplicates = await answers;
      const original = await first;
      // Woken by the commit, far before waitMs (10 s) runs out.
      expect(performance.now() - waitStartedMs).toBeLessThan(5_000);
      for (const duplicate of duplicates) {
        expect(duplicate.status).toBe(201);
        expect(duplicate.text).toBe(original.text);
        expect(duplicate.headers.get('idempotent-replayed')).toBe('true');
      }
      expect(executions()).toBe(1);
      expect(await charges(key)).toBe(1);
    });
  });
});
