import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { POSTGRES_SERVER, DATABASE_URL, rowsWithKey, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';

/**
 * Transactional mode on a pool created with `pipeline: true` (node-postgres 8.23): the claim goes out right
 * behind BEGIN and its mark, and the completion right ahead of COMMIT, without waiting for their answers.
 * What must hold although nothing waits: a claim that fails never lets the handler run, and a completion
 * that fails (or completes nothing) never lets the COMMIT behind it commit the handler's writes.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;
const server = POSTGRES_SERVER;

/**
 * Round trips of a pool's clients: a query sent while none of the client's own is awaiting its answer starts
 * one; a query sent behind another (pipelined) rides along in it.
 */
function countRoundTrips(pool: pg.Pool): () => number {
  let roundTrips = 0;
  pool.on('connect', (client) => {
    let inFlight = 0;
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      if (inFlight === 0) roundTrips++;
      inFlight++;
      const last = args[args.length - 1];
      if (typeof last === 'function') {
        args[args.length - 1] = (...results: unknown[]) => {
          inFlight--;
          return (last as (...results: unknown[]) => unknown)(...results);
        };
        return query(...args);
      }
      return (query(...args) as Promise<unknown>).finally(() => inFlight--);
    };
  });
  return () => roundTrips;
}

/** Network writes of a pool's clients: each is one system call carrying one or more protocol messages. */
function countWrites(pool: pg.Pool): () => number {
  let writes = 0;
  pool.on('connect', (client) => {
    const socket = (client as unknown as { connection: { stream: Record<'_write' | '_writev', (...args: unknown[]) => unknown> } }).connection.stream;
    for (const method of ['_write', '_writev'] as const) {
      const original = socket[method].bind(socket);
      socket[method] = (...args: unknown[]) => {
        writes++;
        return original(...args);
      };
    }
  });
  return () => writes;
}

describe('transactional mode on a pipelined pool (Postgres server)', () => {
  let db: TestDatabase;
  let records: string;
  let charges: string;
  const closing: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    db = await server.open('pipelined');
    records = `"${db.schema}".idempotency_records`;
    charges = `"${db.schema}".charges`;
    await (await db.store()).migrate();
    await db.sql.query(`CREATE TABLE ${charges} (key text NOT NULL, amount int NOT NULL)`);
    // Refusals of the test's own making, for keys and statuses no other test uses.
    await db.sql.query(`ALTER TABLE ${records} ADD CONSTRAINT refused_key CHECK (key NOT LIKE 'refused-%')`);
    await db.sql.query(`ALTER TABLE ${records} ADD CONSTRAINT refused_status CHECK (response_status IS DISTINCT FROM 418)`);
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });
  afterAll(() => db?.close());

  /** POST / charges once through ctx.idempotency.db, then runs `after` (it answers 201 unless `after` says otherwise). */
  async function start(options: { pipeline: boolean; after?: (ctx: Koa.Context) => Promise<void> | void; lockTimeoutMs?: number }) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2, pipeline: options.pipeline });
    pool.on('error', () => undefined);
    const roundTrips = countRoundTrips(pool);
    const writes = countWrites(pool);
    const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0, lockTimeoutMs: options.lockTimeoutMs ?? 2_000 });
    let executions = 0;
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true }));
    app.use(async (ctx) => {
      executions++;
      await ctx.idempotency!.db!.query(`INSERT INTO ${charges} (key, amount) VALUES ($1, $2)`, [ctx.idempotency!.key, 10]);
      ctx.status = 201;
      ctx.body = { charged: 10 };
      await options.after?.(ctx);
    });
    const http = await serve(app);
    closing.push(async () => {
      await http.close();
      await store.close();
      await pool.end();
    });
    return { url: http.url, roundTrips, writes, executions: () => executions };
  }

  const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);
  const recordsOf = (key: string) => rowsWithKey(db.sql, records, key);

  it('sends the claim with BEGIN and the completion with COMMIT, each pair in one write: 3 round trips and 3 writes for a one-statement handler, against 5 unpipelined', async () => {
    const measured: Record<string, { roundTrips: number; writes: number }> = {};
    for (const pipeline of [true, false]) {
      const app = await start({ pipeline });
      // The first request prepares the store's named statements on the connection; the second is counted.
      expect((await postJson(app.url, { amount: 10 }, { key: newKey('warm') })).status).toBe(201);
      const before = { roundTrips: app.roundTrips(), writes: app.writes() };
      const key = newKey('counted');
      const answer = await postJson(app.url, { amount: 10 }, { key });
      measured[pipeline ? 'pipelined' : 'unpipelined'] = { roundTrips: app.roundTrips() - before.roundTrips, writes: app.writes() - before.writes };
      expect(answer.status).toBe(201);
      expect(await chargesOf(key)).toBe(1);
      expect((await postJson(app.url, { amount: 10 }, { key })).headers.get('idempotent-replayed')).toBe('true');
    }
    expect(measured).toEqual({ pipelined: { roundTrips: 3, writes: 3 }, unpipelined: { roundTrips: 5, writes: 5 } });
  });

  it('never runs the handler when the claim sent behind BEGIN fails on a constraint, and leaves no record', async () => {
    const app = await start({ pipeline: true });
    const key = newKey('refused');
    const answer = await postJson(app.url, { amount: 10 }, { key });
    expect(answer.status).toBeGreaterThanOrEqual(500);
    expect(answer.headers.get('content-type')).toContain('application/problem+json');
    expect(app.executions()).toBe(0);
    expect(await recordsOf(key)).toBe(0);
    // The connection went back to the pool in a clean state: the next key is served on it.
    const next = newKey('after-refused');
    expect((await postJson(app.url, { amount: 10 }, { key: next })).status).toBe(201);
    expect(await chargesOf(next)).toBe(1);
  });

  it('never runs the handler when the claim times out on the lock timeout its mark set in the same round trip', async () => {
    const app = await start({ pipeline: true, lockTimeoutMs: 100 });
    const key = newKey('locked');
    // Another session inserted the same key and has not committed: the claim's INSERT waits for it.
    const blocker = new pg.Client({ connectionString: DATABASE_URL });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query(
        `INSERT INTO ${records} (scope, key, status, fingerprint, fingerprint_version, fence, expires_at) VALUES ('', $1, 'in_progress', 'x', 1, 1, now() + interval '1 hour')`,
        [key],
      );
      const answer = await postJson(app.url, { amount: 10 }, { key });
      expect(answer.status).toBeGreaterThanOrEqual(500);
      expect(app.executions()).toBe(0);
      await blocker.query('ROLLBACK');
    } finally {
      await blocker.end();
    }
    expect(await chargesOf(key)).toBe(0);
    expect(await recordsOf(key)).toBe(0);
  });

  it('commits nothing when the completion sent with COMMIT fails on a constraint, and the retry charges once', async () => {
    let teapot = true;
    const app = await start({
      pipeline: true,
      after: (ctx) => {
        if (teapot) ctx.status = 418;
      },
    });
    const key = newKey('teapot');
    const first = await postJson(app.url, { amount: 10 }, { key });
    expect(first.status).toBeGreaterThanOrEqual(500);
    expect(await chargesOf(key)).toBe(0);
    expect(await recordsOf(key)).toBe(0);
    teapot = false;
    expect((await postJson(app.url, { amount: 10 }, { key })).status).toBe(201);
    expect(app.executions()).toBe(2);
    expect(await chargesOf(key)).toBe(1);
  });

  it('commits nothing when the completion sent with COMMIT completes no record (its fence changed), and the retry charges once', async () => {
    let bumpFence = true;
    const app = await start({
      pipeline: true,
      after: async (ctx) => {
        // The handler moves its own record's fence: the completion finds no record of its fence to complete.
        if (bumpFence) await ctx.idempotency!.db!.query(`UPDATE ${records} SET fence = fence + 1 WHERE key = $1`, [ctx.idempotency!.key]);
      },
    });
    const key = newKey('fenced');
    const first = await postJson(app.url, { amount: 10 }, { key });
    expect(first.status).toBeGreaterThanOrEqual(500);
    expect(await chargesOf(key)).toBe(0);
    expect(await recordsOf(key)).toBe(0);
    bumpFence = false;
    expect((await postJson(app.url, { amount: 10 }, { key })).status).toBe(201);
    expect(await chargesOf(key)).toBe(1);
  });
});
