import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { post, waiterApp } from '../helpers/waiter-harness.js';
import { signal, until, type Signal } from '../helpers/events.js';

/**
 * Attack: hundreds of keys wait at once (onInProgress 'wait'). Guarantees: announcements stay under
 * maxAnnouncedWaiters (no `53200 out of shared memory`), every waiter is answered with its own key's response
 * within waitMs, other traffic keeps working, and nothing is left announced afterwards. Also: store.close() while
 * waiters wait does not hang them past waitMs, and never hands them a wrong answer.
 */

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
});

describe.each(databaseTargets())('hundreds of waiting keys on $name', (target) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await target.open('attack_many');
  });
  afterAll(() => db?.close());

  async function gatedApp(waitMs: number, options: Parameters<TestDatabase['store']>[0] = {}) {
    const store = await db.store({ replayCacheEntries: 0, ...options });
    const gates = new Map<string, Signal>();
    const started = new Map<string, Signal>();
    const executions = new Map<string, number>();
    const get = (m: Map<string, Signal>, k: string) => {
      if (!m.has(k)) m.set(k, signal());
      return m.get(k)!;
    };
    const server = await waiterApp({ store, onInProgress: 'wait', waitMs }, async (ctx) => {
      const key = ctx.get('idempotency-key');
      executions.set(key, (executions.get(key) ?? 0) + 1);
      if (key.startsWith('free-')) return;
      get(started, key).fire();
      await get(gates, key).promise;
    });
    closers.push(async () => {
      for (const g of gates.values()) g.fire();
      await server.close();
    });
    return { store, server, gates, started, executions, get };
  }

  // PGlite's one session serves every waiter's re-reads in turn: at 300 waiting keys it fell behind (the slowest
  // waiter 30 s, an unrelated request 29 s; docs/reliability.md), so it is held to a development-sized load.
  it.each(target.name === 'PGlite' ? [20] : [300, 1_000])(
    'answers %i waiting keys with their own responses, within waitMs, announcing at most 64',
    async (N) => {
      const WAIT_MS = 15_000;
      const { server, gates, started, executions, get } = await gatedApp(WAIT_MS);
      const run = Date.now();
      const keys = Array.from({ length: N }, (_, i) => `many-${run}-${i}`);
      const owners = keys.map((key) => post(server.url, key));
      await Promise.all(keys.map((key) => get(started, key).promise));
      const t0 = performance.now();
      const waiters = keys.map((key) => post(server.url, key));
      let maxLocks = 0;
      if (target.name === 'Postgres server') {
        // Observable: the announcements reach their cap (or all waiters are announced).
        await until(
          async () => {
            const { rows } = await db.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted`);
            maxLocks = Math.max(maxLocks, rows[0]!.n);
            return rows[0]!.n >= 64 ? true : undefined;
          },
          '64 announcements',
          10_000,
        );
      }
      // Other traffic still works while the keys wait.
      const freeSentAt = performance.now();
      const free = await post(server.url, `free-${run}`);
      const freeMs = free.answeredAtMs - freeSentAt;
      expect(free.status).toBe(201);
      const releasedAt = performance.now();
      for (const key of keys) get(gates, key).fire();
      const ownerAnswers = await Promise.all(owners);
      const waiterAnswers = await Promise.all(waiters);
      const slowest = Math.max(...waiterAnswers.map((a) => a.answeredAtMs - t0));
      console.info(`[many ${target.name}] slowest of ${N} waiters ${Math.round(slowest)} ms; announcements seen ${maxLocks}`);
      const statuses: Record<string, number> = {};
      for (const a of waiterAnswers) statuses[`${a.status}${a.replayed ? ' replayed' : ''}`] = (statuses[`${a.status}${a.replayed ? ' replayed' : ''}`] ?? 0) + 1;
      console.info(
        `[many ${target.name}] waiter answers:`,
        JSON.stringify(statuses),
        'owners answered by (ms)',
        Math.round(Math.max(...ownerAnswers.map((a) => a.answeredAtMs - t0))),
        'gates released at (ms)',
        Math.round(releasedAt - t0),
        'unrelated request took (ms)',
        Math.round(freeMs),
      );
      expect(maxLocks).toBeLessThanOrEqual(64);
      // Served while the keys wait, not behind them (PGlite at 300 keys once took 29 s): a third of waitMs leaves
      // room for a loaded machine, where a 2 s bound failed at 2.4-2.8 s on unchanged code.
      expect(freeMs, 'an unrelated request while the keys wait').toBeLessThan(WAIT_MS / 3);
      expect(slowest, 'the slowest waiter, from the moment all were sent').toBeLessThan(WAIT_MS + 1_000);
      const wrong = keys.filter((key, i) => waiterAnswers[i]!.status !== 201 || waiterAnswers[i]!.body !== ownerAnswers[i]!.body || !waiterAnswers[i]!.replayed);
      expect(wrong).toEqual([]);
      expect(keys.filter((key) => executions.get(key) !== 1)).toEqual([]);
      void gates;
      void started;
      if (target.name === 'Postgres server') {
        await until(
          async () => {
            const { rows } = await db.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2`);
            return rows[0]!.n === 0 ? true : undefined;
          },
          'no announcement left',
          3_000,
        );
      }
    },
    60_000,
  );

  it("store.close() while 20 keys wait: every waiter is answered within waitMs, never with another key's response", async () => {
    const N = 20;
    const WAIT_MS = 3_000;
    const { store, server, gates, get } = await gatedApp(WAIT_MS);
    const run = Date.now();
    const keys = Array.from({ length: N }, (_, i) => `close-${run}-${i}`);
    const owners = keys.map((key) => post(server.url, key).catch(() => undefined));
    await until(async () => {
      const found = await Promise.all(keys.map((key) => store.find('', key)));
      return found.every((r) => r?.status === 'in_progress') ? true : undefined;
    }, 'every owner in progress');
    const t0 = performance.now();
    const waiters = keys.map((key) => post(server.url, key));
    if (target.name === 'Postgres server') {
      await until(async () => {
        const { rows } = await db.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted`);
        return rows[0]!.n >= N ? true : undefined;
      }, 'every waiter announced');
    }
    await store.close();
    // Half the owners complete after the close.
    for (const key of keys.slice(0, N / 2)) get(gates, key).fire();
    const answers = await Promise.all(waiters.map((w) => w.then((a) => ({ ...a, tookMs: a.answeredAtMs - t0 }))));
    for (const [i, a] of answers.entries()) {
      expect(a.tookMs, `waiter ${i}`).toBeLessThan(WAIT_MS + 1_000);
      // A 409 (still in progress), a 503 (store closed), or the key's own replay: never another key's body.
      if (a.status === 201) expect(JSON.parse(a.body)).toHaveProperty('execution');
      else expect([409, 503]).toContain(a.status);
    }
    for (const key of keys) get(gates, key).fire();
    await Promise.all(owners);
  });
});
