import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { post, waiterApp } from '../helpers/waiter-harness.js';
import { signal, until, type Signal } from '../helpers/events.js';

/**
 * Attack: waiting duplicates whose HTTP clients disconnect (a client timeout, a user closing the tab). Guarantee
 * under attack: a waiter does not outlive its client. Its announcement (one of maxAnnouncedWaiters = 64, each a
 * slot of Postgres' shared lock table) must be withdrawn promptly, else 64 abandoned requests per waitMs push every
 * real waiter of the process to polling; and an abandoned waiter must not run the handler for nobody.
 */

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
});

describe.each(databaseTargets().filter((t) => t.name === 'Postgres server'))('aborted waiting duplicates on $name', (target) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await target.open('attack_abort');
  });
  afterAll(() => db?.close());

  async function announced(): Promise<number> {
    const { rows } = await db.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted`);
    return rows[0]!.n;
  }

  it('withdraws the announcements of 64 waiters within 1 s of their clients disconnecting (waitMs 20 s)', async () => {
    const store = await db.store({ replayCacheEntries: 0 });
    const gates = new Map<string, Signal>();
    const started = new Map<string, Signal>();
    const executions = new Map<string, number>();
    const get = (m: Map<string, Signal>, k: string) => {
      if (!m.has(k)) m.set(k, signal());
      return m.get(k)!;
    };
    const server = await waiterApp({ store, onInProgress: 'wait', waitMs: 20_000 }, async (ctx) => {
      const key = ctx.get('idempotency-key');
      executions.set(key, (executions.get(key) ?? 0) + 1);
      get(started, key).fire();
      await get(gates, key).promise;
      if (key.endsWith('-fail') && executions.get(key) === 1) throw new Error('the first execution fails: the key is released');
    });
    closers.push(async () => {
      for (const g of gates.values()) g.fire();
      await server.close();
    });
    const run = Date.now();
    const keys = Array.from({ length: 64 }, (_, i) => `abort-${run}-${i}${i < 8 ? '-fail' : ''}`);
    const owners = keys.map((key) => post(server.url, key).catch(() => undefined));
    await Promise.all(keys.map((key) => get(started, key).promise));
    const controllers = keys.map(() => new AbortController());
    const waiters = keys.map((key, i) =>
      fetch(server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: '{"n":1}',
        signal: controllers[i]!.signal,
      }).catch(() => 'aborted'),
    );
    await until(async () => ((await announced()) >= 64 ? true : undefined), '64 announcements');
    for (const c of controllers) c.abort();
    await Promise.all(waiters);
    const abortedAt = performance.now();
    // Observable: the locks go (or not) — bounded at 1 s, far below waitMs.
    const withdrawn = await until(async () => ((await announced()) === 0 ? true : undefined), 'the announcements of aborted waiters to be withdrawn', 1_000).catch(
      async () => `still ${await announced()} announcements 1 s after their clients left`,
    );
    console.info(`[abort] ${typeof withdrawn === 'string' ? withdrawn : `withdrawn in ${Math.round(performance.now() - abortedAt)} ms`}`);
    // The first executions of 8 keys fail (released): the abandoned waiters must not run the handler for nobody.
    for (const key of keys) get(gates, key).fire();
    await Promise.all(owners);
    const rerunForNobody = keys.filter((key) => (executions.get(key) ?? 0) > 1);
    console.info(`[abort] keys re-executed for a client that had left: ${rerunForNobody.length} of 8 released`);
    expect({ withdrawn, rerunForNobody }).toEqual({ withdrawn: true, rerunForNobody: [] });
  });
});
