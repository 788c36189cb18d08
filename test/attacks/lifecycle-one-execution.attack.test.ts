import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, MemoryStore, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { POSTGRES_SERVER, DATABASE_URL, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { signal, until } from '../helpers/events.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on the one request lifecycle (both modes, src/middleware/): one execution per key through
 * concurrent duplicates, a client that leaves mid-handler, a handler that writes then answers 5xx or throws,
 * a handler that fires a query and returns without awaiting it. Executions are counted by a side effect: a row
 * the handler writes (through `ctx.idempotency.db` in transactional mode, through the pool in lease mode).
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;
const server = POSTGRES_SERVER;

type Write = (ctx: Koa.Context) => Promise<unknown>;
type Handler = (ctx: Koa.Context, write: Write) => Promise<void>;

describe('one execution per key through the request lifecycle', () => {
  let db: TestDatabase;
  let charges: string;
  const closing: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    db = await server.open('atk_lifecycle');
    charges = `"${db.schema}".charges`;
    await (await db.store()).migrate();
    await db.sql.query(`CREATE TABLE ${charges} (seq bigserial PRIMARY KEY, key text NOT NULL)`);
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });
  afterAll(() => db?.close());

  const modes = [
    ['transactional, PostgresStore', { transactional: true }],
    ['lease, PostgresStore', { transactional: false }],
  ] as const;

  async function start(options: Partial<IdempotencyOptions>, handler: Handler, store?: IdempotencyStore) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 });
    pool.on('error', () => undefined);
    const own = store ?? new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0, lockTimeoutMs: 2_000 });
    const write: Write = (ctx) => {
      const sql = `INSERT INTO ${charges} (key) VALUES ($1)`;
      const values = [ctx.idempotency!.key];
      return ctx.idempotency!.db ? ctx.idempotency!.db.query(sql, values) : pool.query(sql, values);
    };
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store: own, scope: () => 'lifecycle', ...options }));
    app.use((ctx) => handler(ctx, write));
    const http = await serve(app);
    closing.push(async () => {
      await http.close();
      if (own instanceof PostgresStore) await own.close();
      await pool.end();
    });
    return http.url;
  }

  const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);

  it.each(modes)('%s: 20 concurrent duplicates (onInProgress wait) run the handler once, and every answer is its response', async (_name, mode) => {
    const entered = signal();
    const finish = signal();
    const url = await start({ ...mode, onInProgress: 'wait', waitMs: 10_000 }, async (ctx, write) => {
      await write(ctx);
      entered.fire();
      await finish.promise;
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    const key = newKey('wait-20');
    const first = postJson(url, { a: 1 }, { key });
    await entered.promise;
    const duplicates = Array.from({ length: 20 }, () => postJson(url, { a: 1 }, { key }));
    finish.fire();
    const answers = await Promise.all([first, ...duplicates]);
    expect(answers.map((answer) => answer.status)).toEqual(Array(21).fill(201));
    expect(await chargesOf(key)).toBe(1);
  });

  it.each(modes)('%s: a client that leaves mid-handler leaves one execution, and its retry is replayed', async (_name, mode) => {
    const entered = signal();
    const finish = signal();
    const done = signal();
    const url = await start(mode, async (ctx, write) => {
      await write(ctx);
      entered.fire();
      await finish.promise;
      ctx.status = 201;
      ctx.body = { ok: true };
      ctx.res.once('close', () => done.fire());
    });
    const key = newKey('client-leaves');
    const leaving = new AbortController();
    const headers = { 'content-type': 'application/json', 'idempotency-key': key };
    const first = fetch(url, { method: 'POST', headers, body: '{"a":1}', signal: leaving.signal }).catch((error: unknown) => error);
    await entered.promise;
    leaving.abort();
    await first;
    finish.fire();
    await done.promise;
    const retry = await until(async () => {
      const answer = await postJson(url, { a: 1 }, { key });
      return answer.status === 409 ? undefined : answer;
    }, 'the first request to end');
    expect([retry.status, retry.headers.get('idempotent-replayed'), await chargesOf(key)]).toEqual([201, 'true', 1]);
  });

  it('transactional: a handler that writes then answers 503 commits nothing, and its retry runs once', async () => {
    let executions = 0;
    const url = await start({ transactional: true }, async (ctx, write) => {
      await write(ctx);
      ctx.status = ++executions === 1 ? 503 : 201;
      ctx.body = { executions };
    });
    const key = newKey('writes-then-503');
    const first = await postJson(url, { a: 1 }, { key });
    const afterFirst = await chargesOf(key);
    const retry = await postJson(url, { a: 1 }, { key });
    expect([first.status, afterFirst, retry.status, await chargesOf(key)]).toEqual([503, 0, 201, 1]);
  });

  it('transactional: a query the handler fires without awaiting runs in the claim transaction or not at all, never after it', async () => {
    const settled = signal<string>();
    const url = await start({ transactional: true }, async (ctx, write) => {
      void write(ctx).then(
        () => settled.fire('ran'),
        (error: unknown) => settled.fire(`refused: ${String(error)}`),
      );
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    const key = newKey('unawaited');
    const first = await postJson(url, { a: 1 }, { key });
    const outcome = await settled.promise;
    const rows = await chargesOf(key);
    expect([first.status, outcome]).toEqual([201, expect.stringMatching(/^(ran|refused: )/)]);
    // Either the write went in with the response (one row) or was refused (none): never a row outside the claim.
    expect(rows).toBe(outcome === 'ran' ? 1 : 0);
  });

  it('MemoryStore, lease: 20 concurrent duplicates (onInProgress wait) run the handler once', async () => {
    const entered = signal();
    const finish = signal();
    let executions = 0;
    const url = await start(
      { onInProgress: 'wait', waitMs: 10_000 },
      async (ctx) => {
        executions++;
        entered.fire();
        await finish.promise;
        ctx.status = 201;
        ctx.body = { ok: true };
      },
      new MemoryStore(),
    );
    const key = newKey('memory-wait-20');
    const first = postJson(url, { a: 1 }, { key });
    await entered.promise;
    const duplicates = Array.from({ length: 20 }, () => postJson(url, { a: 1 }, { key }));
    finish.fire();
    const answers = await Promise.all([first, ...duplicates]);
    expect(answers.map((answer) => answer.status)).toEqual(Array(21).fill(201));
    expect(executions).toBe(1);
  });
});
