import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from '../helpers/databases.js';
import { post, waiterApp } from '../helpers/waiter-harness.js';
import { signal, until, type Signal } from '../helpers/events.js';

/**
 * Attack: the listening connection is killed (pg_terminate_backend) again and again while many keys have waiting
 * duplicates, and owners complete in between kills. Guarantees: every waiter gets ITS key's response (never
 * another key's, never a stale one), within waitMs; one execution per key; nothing leaks: after the waiters are
 * done no announcement lock remains, and after store.close() no listening session remains.
 */

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
});

describe('the listening connection killed repeatedly (Postgres server)', () => {
  const schema = uniqueSchema('attack_killstorm');
  const applicationName = `attack-kill-${randomBytes(4).toString('hex')}`;
  let admin: pg.Pool;
  let appPool: pg.Pool;
  beforeAll(async () => {
    admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
    admin.on('error', () => undefined);
    appPool = new pg.Pool({ connectionString: DATABASE_URL, max: 8, application_name: applicationName });
    appPool.on('error', () => undefined);
    await admin.query(`CREATE SCHEMA "${schema}"`);
  });
  afterAll(async () => {
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await Promise.all([admin.end(), appPool.end()]);
  });

  /** Backends of the app that are (or were last) the listening session. */
  async function listeners(): Promise<number[]> {
    const { rows } = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = $1
         AND (query LIKE 'LISTEN %' OR query LIKE '%pg_try_advisory_lock_shared%' OR query LIKE '%pg_advisory_unlock_shared%')`,
      [applicationName],
    );
    return rows.map((r) => r.pid);
  }

  async function announcementLocks(): Promise<number> {
    const { rows } = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.objsubid = 2`,
      [applicationName],
    );
    return rows[0]!.n;
  }

  it("answers every waiter with its own key's response, once per key, through 12 kills; leaves no lock or listener behind", async () => {
    const store = new PostgresStore({ pool: appPool, schema, replayCacheEntries: 0 });
    await store.migrate();
    let storeClosed = false;
    closers.push(async () => {
      if (!storeClosed) await store.close();
    });
    const KEYS = 24;
    const WAIT_MS = 8_000;
    const gates = new Map<string, Signal>();
    const started = new Map<string, Signal>();
    const executions = new Map<string, number>();
    const get = (m: Map<string, Signal>, k: string) => {
      if (!m.has(k)) m.set(k, signal());
      return m.get(k)!;
    };
    const server = await waiterApp({ store, onInProgress: 'wait', waitMs: WAIT_MS }, async (ctx) => {
      const key = ctx.get('idempotency-key');
      executions.set(key, (executions.get(key) ?? 0) + 1);
      get(started, key).fire();
      await get(gates, key).promise;
      ctx.set('x-key', key);
    });
    closers.push(async () => {
      for (const g of gates.values()) g.fire();
      await server.close();
    });
    const run = Date.now();
    const keys = Array.from({ length: KEYS }, (_, i) => `storm-${run}-${i}`);
    const owners = keys.map((key) => post(server.url, key));
    await Promise.all(keys.map((key) => get(started, key).promise));
    const waiterStart = performance.now();
    const waiters = keys.flatMap((key) => [post(server.url, key), post(server.url, key)]);
    let kills = 0;
    // Kill, complete two keys, kill again... Every kill waits for a listening session to exist (observable).
    for (let round = 0; round < 12; round++) {
      const pids = await until(async () => {
        const found = await listeners();
        return found.length > 0 ? found : undefined;
      }, 'a listening session to kill');
      for (const pid of pids) await admin.query('SELECT pg_terminate_backend($1, 5000)', [pid]);
      kills += pids.length;
      get(gates, keys[2 * round]!).fire();
      get(gates, keys[2 * round + 1]!).fire();
    }
    const ownerAnswers = await Promise.all(owners);
    const waiterAnswers = await Promise.all(waiters);
    const slowestMs = Math.max(...waiterAnswers.map((a) => a.answeredAtMs - waiterStart));
    console.info(`[kill storm] ${kills} listening sessions killed; slowest waiter ${Math.round(slowestMs)} ms`);
    keys.forEach((key, i) => {
      expect(ownerAnswers[i]!.status).toBe(201);
      for (const w of [waiterAnswers[2 * i]!, waiterAnswers[2 * i + 1]!]) {
        expect({ status: w.status, body: w.body, replayed: w.replayed }).toEqual({ status: 201, body: ownerAnswers[i]!.body, replayed: true });
      }
      expect(executions.get(key)).toBe(1);
    });
    expect(slowestMs).toBeLessThan(WAIT_MS);
    // No announcement outlives its waiter.
    await until(async () => ((await announcementLocks()) === 0 ? true : undefined), 'every announcement lock to be withdrawn', 3_000);
    await store.close();
    storeClosed = true;
    await until(async () => ((await listeners()).length === 0 ? true : undefined), 'no listening session after store.close()', 3_000);
  });
});
