import net from 'node:net';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from '../helpers/databases.js';
import { post, waiterApp } from '../helpers/waiter-harness.js';
import { signal, until, type Signal } from '../helpers/events.js';

/**
 * Attack: the store's ONE listening connection goes half-open (a firewall / NAT drops an idle LISTEN connection
 * silently: no RST, no FIN; every byte is swallowed). The pool's other connections are fine, so claims work.
 * Guarantee under attack: a waiting duplicate is answered within `waitMs` (409 at worst), replayed soon after the
 * owner completes; "the listening session never holds up a waiter"; "NOTIFY is only an accelerator".
 *
 * A proxy in front of Postgres black-holes only the connections that sent a LISTEN (the listening session).
 */

interface ListenerProxy {
  port: number;
  blackHoleListener(): void;
  close(): Promise<void>;
}

async function startListenerProxy(target: { host: string; port: number }): Promise<ListenerProxy> {
  let holeListener = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    let isListener = false;
    client.on('data', (chunk: Buffer) => {
      if (chunk.includes(Buffer.from('LISTEN '))) isListener = true;
      if (isListener && holeListener) return; // swallowed: a half-open connection
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (isListener && holeListener) return;
      client.write(chunk);
    });
    for (const socket of [client, upstream]) {
      socket.on('error', () => undefined);
      socket.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    blackHoleListener() {
      holeListener = true;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
});

/** Resolves to 'hung' when `promise` is not settled within `ms`: a bound on the test, never a synchronisation. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'hung'> {
  let timer: NodeJS.Timeout;
  return Promise.race([promise, new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)))]).finally(() => clearTimeout(timer));
}

describe('a half-open listening connection (Postgres server)', () => {
  const schema = uniqueSchema('attack_halfopen');
  let admin: pg.Pool;
  beforeAll(async () => {
    admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
    await admin.query(`CREATE SCHEMA "${schema}"`);
  });
  afterAll(async () => {
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin.end();
  });

  async function setUp(poolOptions: pg.PoolConfig, waitMs: number) {
    const url = new URL(DATABASE_URL);
    const proxy = await startListenerProxy({ host: url.hostname === 'localhost' ? '127.0.0.1' : url.hostname, port: Number(url.port || 5432) });
    closers.push(() => proxy.close());
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    const pool = new pg.Pool({ connectionString: url.toString(), max: 8, ...poolOptions });
    pool.on('error', () => undefined);
    closers.push(() => pool.end());
    const store = new PostgresStore({ pool, schema, replayCacheEntries: 0 });
    await store.migrate();
    closers.push(() => store.close());
    const gates = new Map<string, Signal>();
    const started = new Map<string, Signal>();
    const gate = (key: string) => {
      if (!gates.has(key)) gates.set(key, signal());
      if (!started.has(key)) started.set(key, signal());
      return { release: gates.get(key)!, started: started.get(key)! };
    };
    const server = await waiterApp({ store, onInProgress: 'wait', waitMs }, async (ctx) => {
      const key = ctx.get('idempotency-key');
      const g = gate(key);
      g.started.fire();
      await g.release.promise;
    });
    closers.push(async () => {
      for (const g of gates.values()) g.fire();
      await server.close();
    });
    // Warm up: one waiter establishes the listening connection (LISTEN through the proxy).
    const warm = `warm-${Date.now()}`;
    const owner = post(server.url, warm);
    await gate(warm).started.promise;
    const waiter = post(server.url, warm);
    // The waiter is announced once its shared lock is visible.
    await until(
      async () => ((await admin.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted`)).rows.length > 0 ? true : undefined),
      "the waiter's announcement",
      5_000,
    );
    gate(warm).release.fire();
    expect((await owner).status).toBe(201);
    expect((await waiter).status).toBe(201);
    return { server, proxy, gate, store };
  }

  it('store.close() returns within 2 s when the listening connection is half-open (graceful shutdown must not hang)', async () => {
    const { proxy, store } = await setUp({}, 1_000);
    proxy.blackHoleListener();
    const closed = await within(
      store.close().then(() => 'closed' as const),
      2_000,
    );
    expect(closed).toBe('closed');
  });

  it('answers a waiting duplicate within waitMs although the listening connection swallows every byte (default pool, no timeouts)', async () => {
    const WAIT_MS = 1_500;
    const { server, proxy, gate } = await setUp({}, WAIT_MS);
    proxy.blackHoleListener();
    const key = `k-${Date.now()}`;
    const owner = post(server.url, key);
    await gate(key).started.promise;
    const waiter = post(server.url, key);
    // The owner never completes during the wait: the waiter must get its 409 at waitMs.
    const answered = await within(waiter, WAIT_MS + 3_000);
    gate(key).release.fire();
    await owner;
    expect(answered === 'hung' ? 'hung past waitMs + 3 s' : answered.status).toBe(409);
  });

  it('answers N waiting duplicates (N keys) within waitMs + one query_timeout when the pool bounds queries (query_timeout 1000)', async () => {
    const WAIT_MS = 1_000;
    const { server, proxy, gate } = await setUp({ query_timeout: 1_000 }, WAIT_MS);
    proxy.blackHoleListener();
    const keys = Array.from({ length: 5 }, (_, i) => `q-${Date.now()}-${i}`);
    const owners = keys.map((key) => post(server.url, key));
    await Promise.all(keys.map((key) => gate(key).started.promise));
    const startedAt = performance.now();
    const waiters = keys.map((key) => post(server.url, key).then((r) => ({ ...r, tookMs: r.answeredAtMs - startedAt })));
    const answered = await within(Promise.all(waiters), 15_000);
    for (const key of keys) gate(key).release.fire();
    await Promise.all(owners);
    expect(answered).not.toBe('hung');
    const took = (answered as Array<{ status: number; tookMs: number }>).map((r) => Math.round(r.tookMs));
    console.info('[half-open] waiter answer times (ms):', took);
    expect((answered as Array<{ status: number }>).map((r) => r.status)).toEqual(keys.map(() => 409));
    // waitMs plus one bounded listener statement, not one per waiter queued behind each other.
    expect(Math.max(...took)).toBeLessThan(WAIT_MS + 1_000 + 700);
  });

  it('replaces a listening connection whose statement timed out: waiters arriving later are not held up by it again (query_timeout 1000)', async () => {
    const WAIT_MS = 1_000;
    const { server, proxy, gate } = await setUp({ query_timeout: 1_000 }, WAIT_MS);
    proxy.blackHoleListener();
    const took: number[] = [];
    // Three waiters one after the other (each on its own key): the first may pay one query_timeout, the later ones must not.
    for (let i = 0; i < 3; i++) {
      const key = `seq-${Date.now()}-${i}`;
      const owner = post(server.url, key);
      await gate(key).started.promise;
      const sentAt = performance.now();
      const waiter = await post(server.url, key);
      took.push(Math.round(waiter.answeredAtMs - sentAt));
      gate(key).release.fire();
      await owner;
      expect(waiter.status).toBe(409);
    }
    console.info('[half-open] sequential waiters answered after (ms):', took);
    expect(took.slice(1).every((ms) => ms < WAIT_MS + 500)).toBe(true);
  });
});
