import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type IdempotencyOptions } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on transactional mode over a pool created with `pipeline: true`: every scenario runs on a
 * pipelined pool and on an unpipelined one, and both must give the same answer (status, problem type) and
 * commit the same writes. Pools have max: 1, so the NEXT request always runs on the same connection.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;
const server = databaseTargets().find((target) => target.name === 'Postgres server')!;

type Handler = (ctx: Koa.Context, db: NonNullable<NonNullable<Koa.Context['idempotency']>['db']>) => Promise<void>;

describe('pipelined transactional mode: the handler’s queries keep their semantics', () => {
  let db: TestDatabase;
  let charges: string;
  let records: string;
  let kids: string;
  let parents: string;
  const closing: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    db = await server.open('atk3_sem');
    records = `"${db.schema}".idempotency_records`;
    charges = `"${db.schema}".charges`;
    kids = `"${db.schema}".kids`;
    parents = `"${db.schema}".parents`;
    await (await db.store()).migrate();
    await db.sql.query(`CREATE TABLE ${charges} (seq bigserial PRIMARY KEY, key text NOT NULL, n int NOT NULL, UNIQUE (key, n))`);
    await db.sql.query(`CREATE TABLE ${parents} (id int PRIMARY KEY)`);
    await db.sql.query(`CREATE TABLE ${kids} (key text NOT NULL, parent int REFERENCES ${parents} (id) DEFERRABLE INITIALLY DEFERRED)`);
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });
  afterAll(() => db?.close());

  async function start(pipeline: boolean, handler: Handler, options: Partial<IdempotencyOptions> = {}, applicationName?: string) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1, pipeline, application_name: applicationName });
    pool.on('error', () => undefined);
    const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0, lockTimeoutMs: 2_000 });
    let executions = 0;
    const app = new Koa();
    app.silent = true;
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true, ...options }));
    app.use(async (ctx) => {
      executions++;
      await handler(ctx, ctx.idempotency!.db!);
    });
    const http = await serve(app);
    closing.push(async () => {
      await http.close();
      // A connection stuck by an attack must not hang the clean-up: its backend is ended first.
      if (applicationName) await db.sql.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [applicationName]);
      await store.close();
      await pool.end();
    });
    return { url: http.url, pool, executions: () => executions };
  }

  const chargesOf = (key: string) => rowsWithKey(db.sql, charges, key);
  const recordsOf = (key: string) => rowsWithKey(db.sql, records, key);
  const problemType = (text: string) => {
    try {
      return (JSON.parse(text) as { type?: string }).type;
    } catch {
      return text;
    }
  };

  /**
   * Runs the scenario (a failing first request through `handler`) on both pools; then a clean request on the
   * same (max: 1) connection. Returns what each pool answered.
   */
  async function bothPools(label: string, handler: Handler) {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, handler);
      const key = newKey(`${label}-${pipeline ? 'p' : 'u'}`);
      const answer = await postJson(app.url, { a: 1 }, { key });
      const next = newKey(`${label}-next`);
      const nextAnswer = await postJson(app.url, { a: 1 }, { key: next, headers: { 'x-clean': '1' } });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        charges: await chargesOf(key),
        records: await recordsOf(key),
        executions: app.executions(),
        nextStatus: nextAnswer.status,
        nextCharges: await chargesOf(next),
      };
    }
    return seen as { pipelined: Record<string, unknown>; unpipelined: Record<string, unknown> };
  }

  /** The clean request of bothPools: charges once and answers 201. */
  const clean = async (ctx: Koa.Context, tdb: Parameters<Handler>[1]) => {
    await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
    ctx.status = 201;
    ctx.body = { ok: true };
  };

  it('a failed query the handler catches and ignores, then 201: nothing commits, same answer on both pools, next request fine', async () => {
    const seen = await bothPools('caught', async (ctx, tdb) => {
      if (ctx.get('x-clean')) return clean(ctx, tdb);
      await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
      await tdb.query('SELECT 1/0').catch(() => undefined);
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined.charges).toBe(0);
    expect(seen.pipelined.records).toBe(0);
    expect(seen.pipelined.nextStatus).toBe(201);
    expect(seen.pipelined.nextCharges).toBe(1);
  });

  it('Promise.all of many queries with one failing (caught), then 201: nothing commits, same answer on both pools', async () => {
    const seen = await bothPools('all-one-fails', async (ctx, tdb) => {
      if (ctx.get('x-clean')) return clean(ctx, tdb);
      const key = ctx.idempotency!.key;
      await Promise.allSettled(
        Array.from({ length: 12 }, (_, n) => (n === 5 ? tdb.query('SELECT 1/0') : tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, $2)`, [key, n]))),
      );
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined.charges).toBe(0);
    expect(seen.pipelined.nextCharges).toBe(1);
  });

  it('Promise.all of many queries, all succeed: every write commits, in the order they were issued', async () => {
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        const key = ctx.idempotency!.key;
        await Promise.all(Array.from({ length: 40 }, (_, n) => tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, $2)`, [key, n])));
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`all-ok-${pipeline}`);
      expect((await postJson(app.url, {}, { key })).status).toBe(201);
      const { rows } = await db.sql.query<{ n: number }>(`SELECT n FROM ${charges} WHERE key = $1 ORDER BY seq`, [key]);
      expect(rows.map((row) => row.n)).toEqual(Array.from({ length: 40 }, (_, n) => n));
      const replay = await postJson(app.url, {}, { key });
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(app.executions()).toBe(1);
    }
  });

  it('a query error reaches the handler as the original error (SQLSTATE, constraint), not a pipeline artefact', async () => {
    const codes: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        const key = ctx.idempotency!.key;
        await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [key]);
        await tdb.query('SAVEPOINT s');
        const error = (await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [key]).catch((e: unknown) => e)) as {
          code?: string;
          constraint?: string;
        };
        await tdb.query('ROLLBACK TO SAVEPOINT s');
        await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 2)`, [key]);
        ctx.status = 201;
        ctx.body = { code: error.code, constraint: error.constraint };
      });
      const key = newKey(`savepoint-${pipeline}`);
      const answer = await postJson(app.url, {}, { key });
      codes[pipeline ? 'pipelined' : 'unpipelined'] = { status: answer.status, body: answer.text, charges: await chargesOf(key) };
    }
    expect(codes.pipelined).toEqual(codes.unpipelined);
    expect((codes.pipelined as { charges: number }).charges).toBe(2);
  });

  it('savepoint pipelined all at once (SAVEPOINT, failing INSERT, ROLLBACK TO, good INSERT in one Promise.all): commits the good write', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        const key = ctx.idempotency!.key;
        await Promise.allSettled([
          tdb.query('SAVEPOINT s'),
          tdb.query('SELECT 1/0'),
          tdb.query('ROLLBACK TO SAVEPOINT s'),
          tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 7)`, [key]),
        ]);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`sp-all-${pipeline}`);
      const answer = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = { status: answer.status, charges: await chargesOf(key) };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toEqual({ status: 201, charges: 1 });
  });

  it('a deferred constraint failing at COMMIT: nothing commits, same answer on both pools, next request on the connection fine', async () => {
    const seen = await bothPools('deferred', async (ctx, tdb) => {
      if (ctx.get('x-clean')) return clean(ctx, tdb);
      await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
      await tdb.query(`INSERT INTO ${kids} (key, parent) VALUES ($1, 424242)`, [ctx.idempotency!.key]);
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined.charges).toBe(0);
    expect(seen.pipelined.records).toBe(0);
    expect(seen.pipelined.nextStatus).toBe(201);
  });

  it('a handler that never awaits its write, then 201: the write commits once with the response, replay works', async () => {
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        void tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]).catch(() => undefined);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`unawaited-${pipeline}`);
      expect((await postJson(app.url, {}, { key })).status).toBe(201);
      expect(await chargesOf(key)).toBe(1);
      expect((await postJson(app.url, {}, { key })).headers.get('idempotent-replayed')).toBe('true');
      expect(app.executions()).toBe(1);
    }
  });

  it('a handler that never awaits a FAILING query, then 201: nothing commits, same answer on both pools', async () => {
    const seen = await bothPools('unawaited-fail', async (ctx, tdb) => {
      if (ctx.get('x-clean')) return clean(ctx, tdb);
      await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
      void tdb.query('SELECT 1/0').catch(() => undefined);
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined.charges).toBe(0);
    expect(seen.pipelined.nextCharges).toBe(1);
  });

  it('a handler that throws while its queries are still in flight: rollback, nothing commits, next request fine', async () => {
    const seen = await bothPools('throw-inflight', async (ctx, tdb) => {
      if (ctx.get('x-clean')) return clean(ctx, tdb);
      const key = ctx.idempotency!.key;
      for (let n = 0; n < 10; n++) void tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, $2)`, [key, n]).catch(() => undefined);
      throw new Error('handler failed');
    });
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined.charges).toBe(0);
    expect(seen.pipelined.nextCharges).toBe(1);
  });

  it('a parameter that fails to serialise client-side (circular object), caught: the following queries get their own results, the writes commit', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        const key = ctx.idempotency!.key;
        const circular: Record<string, unknown> = {};
        circular.self = circular;
        const results = await Promise.allSettled([
          tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [key]),
          tdb.query('SELECT $1::text AS v', [circular]),
          tdb.query(`SELECT 'second'::text AS v`),
          tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 2) RETURNING n`, [key]),
          tdb.query(`SELECT 'fourth'::text AS v`),
        ]);
        ctx.status = 201;
        ctx.body = results.map((r) => (r.status === 'fulfilled' ? (r.value.rows[0] ?? null) : 'rejected'));
      });
      const key = newKey(`circular-${pipeline}`);
      const answer = await postJson(app.url, {}, { key });
      const next = newKey(`circular-next-${pipeline}`);
      const nextAnswer = await postJson(app.url, {}, { key: next });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        body: answer.text,
        charges: await chargesOf(key),
        next: nextAnswer.status,
        nextBody: nextAnswer.text,
        nextCharges: await chargesOf(next),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ status: 201, charges: 2, next: 201, nextCharges: 2 });
  });

  it('a response header value JSON cannot serialise (a BigInt through ctx.res.setHeader): the claim’s transaction is ended and its connection returned, same as unpipelined', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
        ctx.status = 201;
        ctx.body = { ok: true };
        if (!ctx.get('x-clean')) ctx.res.setHeader('x-count', 10n as unknown as string);
      });
      const key = newKey(`bigint-header-${pipeline}`);
      const answer = await postJson(app.url, {}, { key });
      const checkedOut = app.pool.totalCount - app.pool.idleCount;
      const { rows } = await db.sql.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND datname = current_database() AND pid <> pg_backend_pid()`,
      );
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        checkedOut,
        idleInTransaction: rows[0]!.n,
        charges: await chargesOf(key),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ checkedOut: 0, idleInTransaction: 0 });
  });

  /**
   * COPY … FROM STDIN through ctx.idempotency.db: node-postgres answers the server's CopyInResponse with a
   * CopyFail (no stream to feed it). Each request is bounded (an abort after 15 s), and the pool's backends are
   * terminated at the end so that a stuck connection cannot hang the file.
   */
  async function copyScenario(pipeline: boolean, handler: Handler) {
    const app = await start(pipeline, handler, {}, `atk3-copy-${pipeline ? 'p' : 'u'}-${keySeq}`);
    const bounded = (key: string, headers: Record<string, string> = {}) =>
      fetch(app.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
        body: '{}',
        signal: AbortSignal.timeout(15_000),
      }).then(
        async (r) => ({ status: r.status, type: problemType(await r.text()) }),
        (e: Error) => ({ status: 0, type: `no answer: ${e.name}` }),
      );
    const key = newKey(`copy-${pipeline ? 'p' : 'u'}`);
    const answer = await bounded(key);
    const next = newKey(`copy-next-${pipeline ? 'p' : 'u'}`);
    const nextAnswer = await bounded(next, { 'x-clean': '1' });
    const before = { charges: await chargesOf(key), records: await recordsOf(key), nextCharges: await chargesOf(next) };
    // The same key retried through another app on a fresh pool: nothing was committed, so it must run (201).
    const other = await start(pipeline, clean, {}, `atk3-copy-retry-${keySeq}`);
    const retry = await fetch(other.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-clean': '1' },
      body: '{}',
      signal: AbortSignal.timeout(15_000),
    }).then(
      (r) => r.status,
      () => 0,
    );
    return { answer, ...before, next: nextAnswer.status, retryElsewhere: retry };
  }

  for (const pipeline of [false, true]) {
    const mode = pipeline ? 'pipelined' : 'unpipelined';
    // node-postgres answered the server's request for COPY data with a CopyFail and no Sync, and the request and
    // its connection hung for good (before: "no answer: TimeoutError", next 0): the table form is now refused
    // before it reaches Postgres, so a handler that catches the refusal commits what it wrote, once.
    it(`${mode}: COPY … FROM STDIN through ctx.idempotency.db is refused before it reaches Postgres; caught, then 201: answered, committed once, next key served`, async () => {
      const refusals: string[] = [];
      const outcome = await copyScenario(pipeline, async (ctx, tdb) => {
        if (ctx.get('x-clean')) return clean(ctx, tdb);
        await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
        await tdb.query(`COPY ${charges} (key, n) FROM STDIN`).catch((error: Error) => refusals.push(error.name));
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      expect(refusals).toEqual(['TransactionControlError']);
      expect(outcome).toMatchObject({ answer: { status: 201 }, next: 201, retryElsewhere: 201, charges: 1, records: 1, nextCharges: 1 });
    }, 60_000);

    it(`${mode}: COPY … FROM STDIN in one Promise.all with other writes, refused and caught, then 201: both writes commit once, next key served`, async () => {
      const outcome = await copyScenario(pipeline, async (ctx, tdb) => {
        if (ctx.get('x-clean')) return clean(ctx, tdb);
        const key = ctx.idempotency!.key;
        await Promise.allSettled([
          tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [key]),
          tdb.query(`/* a comment first */ copy ${charges} (key, n) FROM STDIN`),
          tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 2)`, [key]),
        ]);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      expect(outcome).toMatchObject({ answer: { status: 201 }, next: 201, retryElsewhere: 201, charges: 2, records: 1, nextCharges: 1 });
    }, 60_000);
  }

  for (const pipeline of [false, true]) {
    it(`${pipeline ? 'pipelined' : 'unpipelined'}: COPY … TO STDOUT through ctx.idempotency.db, then a write and 201: answered, committed once, next key served`, async () => {
      const outcome = await copyScenario(pipeline, async (ctx, tdb) => {
        if (ctx.get('x-clean')) return clean(ctx, tdb);
        await tdb.query(`COPY (SELECT 1) TO STDOUT`).catch(() => undefined);
        await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      expect(outcome).toMatchObject({ answer: { status: 201 }, charges: 1, next: 201, nextCharges: 1 });
    }, 60_000);
  }

  it('a huge response body (4 MB, under maxBodyBytes) stored with the pipelined COMMIT: committed and replayed byte for byte', async () => {
    const big = 'x'.repeat(4 * 1024 * 1024);
    for (const pipeline of [false, true]) {
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
          ctx.status = 201;
          ctx.body = { big };
        },
        { maxBodyBytes: 16 * 1024 * 1024 },
      );
      const key = newKey(`huge-${pipeline}`);
      const first = await postJson(app.url, {}, { key });
      const replay = await postJson(app.url, {}, { key });
      expect({ first: first.status, replay: replay.status, same: replay.text === first.text, charges: await chargesOf(key) }).toEqual({
        first: first.status,
        replay: first.status,
        same: true,
        charges: first.status === 201 ? 1 : 0,
      });
    }
  });
});
