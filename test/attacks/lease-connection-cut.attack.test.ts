import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from '../helpers/databases.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { post, waiterApp } from '../helpers/waiter-harness.js';
import { signal, type Signal } from '../helpers/events.js';

/**
 * Lease mode, connections dropped mid-request (a TCP proxy between the app and Postgres). Guarantees: one
 * execution per key, the stored response is what every retry and waiter replays, a waiter is answered within
 * waitMs, and a claim whose answer was lost (the record exists, nobody owns it) is recovered at its lease's lapse.
 */

const LEASE_MS = 1_500;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
});

describe('lease mode with connections cut (Postgres server)', () => {
  const schema = uniqueSchema('attack_cut');
  let admin: pg.Pool;
  let proxy: TcpProxy;
  let pool: pg.Pool;
  let store: PostgresStore;
  beforeAll(async () => {
    admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
    await admin.query(`CREATE SCHEMA "${schema}"`);
    const url = new URL(DATABASE_URL);
    proxy = await startTcpProxy({ host: url.hostname === 'localhost' ? '127.0.0.1' : url.hostname, port: Number(url.port || 5432) });
    pool = new pg.Pool({ connectionString: proxy.urlFor(DATABASE_URL), max: 6, connectionTimeoutMillis: 2_000, query_timeout: 3_000 });
    pool.on('error', () => undefined);
    store = new PostgresStore({ pool, schema, replayCacheEntries: 0, preparedStatements: false });
    await store.migrate();
  });
  afterAll(async () => {
    await store.close();
    await pool.end();
    await proxy.close();
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin.end();
  });
  afterEach(() => proxy.reset());

  async function app() {
    const gates = new Map<string, Signal>();
    const started = new Map<string, Signal>();
    const executions = new Map<string, number>();
    const get = (m: Map<string, Signal>, k: string) => {
      if (!m.has(k)) m.set(k, signal());
      return m.get(k)!;
    };
    const server = await waiterApp({ store, leaseMs: LEASE_MS, onInProgress: 'wait', waitMs: 6_000 }, async (ctx) => {
      const key = ctx.get('idempotency-key');
      executions.set(key, (executions.get(key) ?? 0) + 1);
      get(started, key).fire();
      await get(gates, key).promise;
    });
    closers.push(async () => {
      for (const g of gates.values()) g.fire();
      await server.close();
    });
    return { server, gates, started, executions, get };
  }

  it("completion's answer lost while a duplicate waits: the waiter replays the owner's response, one execution", async () => {
    const { server, executions, get, started, gates } = await app();
    const key = `cut-complete-${Date.now()}`;
    const owner = post(server.url, key);
    await get(started, key).promise;
    const waiter = post(server.url, key);
    const cut = proxy.cutWhen(`status = 'completed'`, 'after');
    get(gates, key).fire();
    await cut;
    const [first, second] = await Promise.all([owner, waiter]);
    expect(first.status).toBe(201);
    expect(second).toMatchObject({ status: 201, body: first.body, replayed: true });
    expect(executions.get(key)).toBe(1);
  });

  it('completion dropped before Postgres sees it while a duplicate waits: retried completion, the waiter replays it, one execution', async () => {
    const { server, executions, get, started, gates } = await app();
    const key = `cut-complete-before-${Date.now()}`;
    const owner = post(server.url, key);
    await get(started, key).promise;
    const waiter = post(server.url, key);
    const cut = proxy.cutWhen(`status = 'completed'`, 'before');
    get(gates, key).fire();
    await cut;
    const [first, second] = await Promise.all([owner, waiter]);
    expect(first.status).toBe(201);
    expect(second).toMatchObject({ status: 201, body: first.body, replayed: true });
    expect(executions.get(key)).toBe(1);
  });

  it("claim's answer lost (the record committed, nobody owns it): the client's retry executes once, at the latest at the lease's lapse", async () => {
    const { server, executions, get, gates } = await app();
    const key = `cut-claim-${Date.now()}`;
    get(gates, key).fire(); // this key's handler is not held
    const cut = proxy.cutWhen(key, 'after');
    let fired = false;
    void cut.then(() => (fired = true));
    const first = await post(server.url, key);
    console.info(`[cut] claim cut fired: ${fired}, first answered ${first.status}`);
    expect(fired).toBe(true);
    proxy.reset();
    const retrySentAt = performance.now();
    const retryPromise = post(server.url, key);
    let timer: NodeJS.Timeout | undefined;
    const raced = await Promise.race([retryPromise, new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), 8_000)))]);
    clearTimeout(timer);
    if (raced === 'hung') {
      const { rows: record } = await admin
        .query(`SELECT status, lease_expires_at > now() AS leased, fence FROM "${schema}".idempotency_records WHERE key = $1`, [key])
        .catch((e) => ({ rows: [String(e)] }));
      const { rows: activity } = await admin.query(
        `SELECT pid, state, wait_event_type, wait_event, left(query, 80) AS query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query NOT LIKE '%pg_stat_activity%'`,
      );
      console.info(
        '[cut] retry hung 8 s; record',
        JSON.stringify(record),
        'executions',
        executions.get(key),
        'proxy open',
        proxy.openConnections,
        'activity',
        JSON.stringify(activity.filter((a: { state: string }) => a.state !== 'idle')),
      );
    }
    expect(raced, 'the retry answered within waitMs + 2 s').not.toBe('hung');
    const retry = raced as Awaited<typeof retryPromise>;
    const tookMs = retry.answeredAtMs - retrySentAt;
    console.info(`[cut] claim answer lost: first ${first.status}, retry ${retry.status} after ${Math.round(tookMs)} ms (leaseMs ${LEASE_MS})`);
    expect(first.status).toBe(503);
    expect(retry.status).toBe(201);
    expect(executions.get(key)).toBe(1);
    expect(tookMs).toBeLessThan(LEASE_MS + 700);
  });
});
