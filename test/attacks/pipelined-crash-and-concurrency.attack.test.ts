import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, type IdempotencyOptions } from '../../src/index.js';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attacks on transactional mode over a pipelined pool: connections killed between the claim and the
 * completion and during the pipelined COMMIT, timeouts during the claim, duplicates and an exhausted pool.
 * Each runs on a pipelined and an unpipelined pool; the answers must agree and every key must charge once.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;
const server = databaseTargets().find((target) => target.name === 'Postgres server')!;

type Tdb = NonNullable<NonNullable<Koa.Context['idempotency']>['db']>;
type Handler = (ctx: Koa.Context, db: Tdb) => Promise<void>;

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/** Polls `check` (a query) until it returns true: bounded, each attempt waits for a round trip to the server. */
async function until(check: () => Promise<boolean>, what: string, attempts = 2_000): Promise<void> {
  for (let i = 0; i < attempts; i++) if (await check()) return;
  throw new Error(`never observed: ${what}`);
}

describe('pipelined transactional mode: crashes, timeouts, duplicates', () => {
  let db: TestDatabase;
  let charges: string;
  let records: string;
  let gated: string;
  let admin: pg.Client;
  const closing: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    db = await server.open('atk3_crash');
    records = `"${db.schema}".idempotency_records`;
    charges = `"${db.schema}".charges`;
    gated = `"${db.schema}".gated`;
    await (await db.store()).migrate();
    await db.sql.query(`CREATE TABLE ${charges} (seq bigserial PRIMARY KEY, key text NOT NULL, n int NOT NULL)`);
    await db.sql.query(`CREATE TABLE ${gated} (key text NOT NULL, gate bigint NOT NULL)`);
    // A deferred constraint trigger that waits, at COMMIT, for an advisory lock the test holds: the COMMIT is
    // observably in progress (pg_locks) while the test kills its connection.
    await db.sql.query(`CREATE FUNCTION "${db.schema}".wait_gate() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock(NEW.gate); RETURN NULL; END $$`);
    await db.sql.query(`CREATE CONSTRAINT TRIGGER wait_gate AFTER INSERT ON ${gated} DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION "${db.schema}".wait_gate()`);
    admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
  });
  afterEach(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
  });
  afterAll(async () => {
    await admin?.end();
    await db?.close();
  });

  async function start(
    pipeline: boolean,
    handler: Handler,
    options: { max?: number; idempotency?: Partial<IdempotencyOptions>; pgOptions?: string; lockTimeoutMs?: number; queryTimeoutMs?: number } = {},
  ) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: options.max ?? 1, pipeline, options: options.pgOptions, query_timeout: options.queryTimeoutMs });
    pool.on('error', () => undefined);
    const store = new PostgresStore({ pool, schema: db.schema, replayCacheEntries: 0, lockTimeoutMs: options.lockTimeoutMs ?? 2_000 });
    let executions = 0;
    let arrivals = 0;
    const app = new Koa();
    app.silent = true;
    app.use(async (_ctx, next) => {
      arrivals++;
      await next();
    });
    app.use(bodyParser());
    app.use(idempotency({ store, transactional: true, ...options.idempotency }));
    app.use(async (ctx) => {
      executions++;
      await handler(ctx, ctx.idempotency!.db!);
    });
    const http = await serve(app);
    closing.push(async () => {
      await http.close();
      await store.close();
      await pool.end();
    });
    return { url: http.url, pool, executions: () => executions, arrivals: () => arrivals };
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
  const charge = (ctx: Koa.Context, tdb: Tdb) => tdb.query(`INSERT INTO ${charges} (key, n) VALUES ($1, 1)`, [ctx.idempotency!.key]);
  const backendGone = (pid: number) => async () => (await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0].n === 0;

  it('connection killed between the handler’s write and the completion: nothing commits, same answer both pools, the retry charges once', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      let kill = true;
      let pidSeen!: (pid: number) => void;
      const pidPromise = new Promise<number>((resolve) => (pidSeen = resolve));
      const resume = gate();
      const app = await start(pipeline, async (ctx, tdb) => {
        await charge(ctx, tdb);
        if (kill) {
          kill = false;
          const { rows } = await tdb.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
          pidSeen(rows[0]!.pid);
          await resume.opened;
        }
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`kill-mid-${pipeline}`);
      const first = postJson(app.url, {}, { key });
      const pid = await pidPromise;
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await until(backendGone(pid), 'the killed backend gone');
      resume.open();
      const answer = await first;
      const afterFirst = { charges: await chargesOf(key), records: await recordsOf(key) };
      const retry = await postJson(app.url, {}, { key });
      const replay = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        afterFirst,
        retry: retry.status,
        replayed: replay.headers.get('idempotent-replayed'),
        charges: await chargesOf(key),
        executions: app.executions(),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ afterFirst: { charges: 0, records: 0 }, retry: 201, replayed: 'true', charges: 1, executions: 2 });
  });

  it('connection killed during the pipelined COMMIT (blocked in a deferred trigger): the client is told the outcome is unknown, and the retry charges once overall', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const gateId = 900_000 + keySeq;
      await admin.query('SELECT pg_advisory_lock($1)', [gateId]);
      let block = true;
      const app = await start(pipeline, async (ctx, tdb) => {
        await charge(ctx, tdb);
        if (block) {
          block = false;
          await tdb.query(`INSERT INTO ${gated} (key, gate) VALUES ($1, $2)`, [ctx.idempotency!.key, gateId]);
        }
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`kill-commit-${pipeline}`);
      const first = postJson(app.url, {}, { key });
      let pid = 0;
      await until(async () => {
        const { rows } = await admin.query(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1 AND classid = 0`, [gateId]);
        pid = rows[0]?.pid ?? 0;
        return pid !== 0;
      }, 'the COMMIT waiting in the deferred trigger');
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      const answer = await first;
      await admin.query('SELECT pg_advisory_unlock($1)', [gateId]);
      const afterFirst = { charges: await chargesOf(key), records: await recordsOf(key) };
      const retry = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        afterFirst,
        retry: retry.status,
        charges: await chargesOf(key),
        executions: app.executions(),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ status: 503, afterFirst: { charges: 0, records: 0 }, retry: 201, charges: 1, executions: 2 });
  });

  it('statement_timeout hit by the claim (blocked behind an uncommitted duplicate insert): the handler never runs, no record, the connection serves the next key', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { pgOptions: '-c statement_timeout=300', lockTimeoutMs: 60_000 },
      );
      const key = newKey(`stmt-timeout-${pipeline}`);
      const blocker = new pg.Client({ connectionString: DATABASE_URL });
      await blocker.connect();
      let answer;
      try {
        await blocker.query('BEGIN');
        await blocker.query(
          `INSERT INTO ${records} (scope, key, status, fingerprint, fingerprint_version, fence, expires_at) VALUES ('', $1, 'in_progress', 'x', 1, 1, now() + interval '1 hour')`,
          [key],
        );
        answer = await postJson(app.url, {}, { key });
        await blocker.query('ROLLBACK');
      } finally {
        await blocker.end();
      }
      const next = newKey(`stmt-timeout-next-${pipeline}`);
      const nextAnswer = await postJson(app.url, {}, { key: next });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        executions: app.executions(),
        charges: await chargesOf(key),
        records: await recordsOf(key),
        next: nextAnswer.status,
        nextCharges: await chargesOf(next),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ executions: 1, charges: 0, records: 0, next: 201, nextCharges: 1 });
  });

  it('ten concurrent duplicates while the first holds its claim (onInProgress wait): one execution, every answer the same 201', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const release = gate();
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          entered();
          await release.opened;
          ctx.status = 201;
          ctx.body = { ok: true, n: 1 };
        },
        { max: 12, idempotency: { onInProgress: 'wait' } },
      );
      const key = newKey(`dups-${pipeline}`);
      const first = postJson(app.url, { a: 1 }, { key });
      await inHandler;
      const dups = Array.from({ length: 10 }, () => postJson(app.url, { a: 1 }, { key }));
      // Every duplicate has reached the server (they then wait, or try to claim, while the first holds its claim).
      try {
        await until(async () => {
          await admin.query('SELECT 1');
          return app.arrivals() >= 11;
        }, 'every duplicate at the server');
        await admin.query('SELECT 1');
      } finally {
        release.open();
      }
      release.open();
      const answers = await Promise.all([first, ...dups]);
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        statuses: answers.map((a) => a.status),
        bodies: new Set(answers.map((a) => a.text)).size,
        executions: app.executions(),
        charges: await chargesOf(key),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toEqual({ statuses: Array(11).fill(201), bodies: 1, executions: 1, charges: 1 });
  });

  it('pool exhausted (max: 1): a duplicate waiting for the only connection gets the replay once the first commits', async () => {
    for (const pipeline of [false, true]) {
      const release = gate();
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          entered();
          await release.opened;
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { max: 1, idempotency: { onInProgress: 'wait' } },
      );
      const key = newKey(`exhausted-${pipeline}`);
      const first = postJson(app.url, { a: 1 }, { key });
      await inHandler;
      const dup = postJson(app.url, { a: 1 }, { key });
      await until(async () => {
        await admin.query('SELECT 1');
        return app.pool.waitingCount > 0;
      }, 'the duplicate waiting for the pool');
      release.open();
      const [a, b] = await Promise.all([first, dup]);
      expect({ a: a.status, b: b.status, replayed: b.headers.get('idempotent-replayed'), executions: app.executions(), charges: await chargesOf(key) }).toEqual({
        a: 201,
        b: 201,
        replayed: 'true',
        executions: 1,
        charges: 1,
      });
    }
  });

  it('connection killed while the pipelined claim waits (behind an uncommitted duplicate row): the handler never runs, a 5xx, the pool serves the next key', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { lockTimeoutMs: 60_000 },
      );
      const key = newKey(`kill-claim-${pipeline}`);
      const blocker = new pg.Client({ connectionString: DATABASE_URL });
      await blocker.connect();
      let answer;
      try {
        await blocker.query('BEGIN');
        await blocker.query(
          `INSERT INTO ${records} (scope, key, status, fingerprint, fingerprint_version, fence, expires_at) VALUES ('', $1, 'in_progress', 'x', 1, 1, now() + interval '1 hour')`,
          [key],
        );
        const blockerPid = (await blocker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
        const pending = postJson(app.url, {}, { key });
        let pid = 0;
        await until(async () => {
          const { rows } = await admin.query(`SELECT pid FROM pg_locks WHERE NOT granted AND locktype = 'transactionid' AND pid <> $1`, [blockerPid]);
          pid = rows[0]?.pid ?? 0;
          return pid !== 0;
        }, 'the claim waiting behind the blocker');
        await admin.query('SELECT pg_terminate_backend($1)', [pid]);
        answer = await pending;
        await blocker.query('ROLLBACK');
      } finally {
        await blocker.end();
      }
      const next = newKey(`kill-claim-next-${pipeline}`);
      const nextAnswer = await postJson(app.url, {}, { key: next });
      const retry = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        next: nextAnswer.status,
        retry: retry.status,
        charges: await chargesOf(key),
        executions: app.executions(),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ next: 201, retry: 201, charges: 1, executions: 2 });
  });

  it('a streamed response body in transactional mode: the write commits once, the retry is told it is not replayable, same on both pools', async () => {
    const { Readable } = await import('node:stream');
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        await charge(ctx, tdb);
        ctx.status = 201;
        ctx.type = 'text/plain';
        ctx.body = Readable.from(['a', 'b', 'c']);
      });
      const key = newKey(`stream-${pipeline}`);
      const first = await postJson(app.url, {}, { key });
      const retry = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        first: first.status,
        body: first.text,
        retry: retry.status,
        retryType: problemType(retry.text),
        charges: await chargesOf(key),
        executions: app.executions(),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ first: 201, body: 'abc', charges: 1, executions: 1 });
  });

  it('a step whose result jsonb refuses (a NUL character) inside the claim’s transaction: nothing commits, same answer on both pools, the next key is served', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        await charge(ctx, tdb);
        if (!ctx.get('x-clean')) await ctx.idempotency!.step('nul', () => ({ text: 'a\u0000b' })).catch(() => undefined);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`nul-step-${pipeline}`);
      const first = await postJson(app.url, {}, { key });
      const next = newKey(`nul-step-next-${pipeline}`);
      const nextAnswer = await postJson(app.url, {}, { key: next, headers: { 'x-clean': '1' } });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        first: first.status,
        type: problemType(first.text),
        charges: await chargesOf(key),
        next: nextAnswer.status,
        nextCharges: await chargesOf(next),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ charges: 0, next: 201, nextCharges: 1 });
  });

  it('a handler query hitting the pool’s client-side query_timeout, caught, then 201: exactly once either way (the pipelined pool loses the connection, so 503 then a run; the unpipelined one commits, so 201 then a replay, as the README says)', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const gateId = 800_000 + keySeq;
      await admin.query('SELECT pg_advisory_lock($1)', [gateId]);
      let timedOut!: () => void;
      const handlerTimedOut = new Promise<void>((resolve) => (timedOut = resolve));
      let first = true;
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          if (first) {
            first = false;
            await tdb.query('SELECT pg_advisory_xact_lock($1)', [gateId]).catch(() => timedOut());
          }
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { queryTimeoutMs: 300 },
      );
      const key = newKey(`qtimeout-${pipeline}`);
      const pending = postJson(app.url, {}, { key });
      await handlerTimedOut;
      await admin.query('SELECT pg_advisory_unlock($1)', [gateId]);
      const answer = await pending;
      const retry = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        retry: retry.status,
        retryReplayed: retry.headers.get('idempotent-replayed'),
        charges: await chargesOf(key),
      };
    }
    // node-postgres destroys a pipelined connection whose sent query timed out (pg/lib/client.js), taking the
    // claim's transaction with it; an unpipelined one leaves the statement running to commit with the response.
    expect(seen.unpipelined).toEqual({ status: 201, type: undefined, retry: 201, retryReplayed: 'true', charges: 1 });
    expect(seen.pipelined).toEqual({ status: 503, type: 'urn:koa-idempotency:problem:store-unavailable', retry: 201, retryReplayed: null, charges: 1 });
  });

  it('SERIALIZABLE pool, two keys whose handlers conflict (read-then-write skew): the loser is rolled back, not half-committed; same answers on both pools; each key charges once after a retry', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const group = `skew-${pipeline}-${keySeq}`;
      let reads = 0;
      let bothRead!: () => void;
      const readBoth = new Promise<void>((resolve) => (bothRead = resolve));
      let racing = true;
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          // Each reads the group's charges, waits until the other has read too, then writes: a write skew.
          await tdb.query(`SELECT count(*) FROM ${charges} WHERE key LIKE $1`, [`${group}%`]);
          if (racing) {
            if (++reads === 2) bothRead();
            await readBoth;
          }
          await charge(ctx, tdb);
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { max: 4, pgOptions: '-c default_transaction_isolation=serializable' },
      );
      const keys = [`${group}-a-${newKey('s')}`, `${group}-b-${newKey('s')}`];
      const answers = await Promise.all(keys.map((key) => postJson(app.url, {}, { key })));
      racing = false;
      const afterRace = await Promise.all(keys.map((key) => chargesOf(key)));
      const retries = await Promise.all(keys.map((key) => postJson(app.url, {}, { key })));
      // Postgres reports the skew at the handler's write (a 500: the handler's own error) or at COMMIT (a 503:
      // the completion failed), whichever statement it checks first; timing decides, on either pool.
      const outcome = (a: { status: number; text: string }) =>
        a.status === 500 || (a.status === 503 && problemType(a.text) === 'urn:koa-idempotency:problem:store-unavailable') ? 'rolled back' : a.status;
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        outcomes: answers.map(outcome).map(String).sort(),
        committedAfterRace: afterRace.reduce((a, b) => a + b, 0),
        retries: retries.map((r) => r.status),
        charges: await Promise.all(keys.map((key) => chargesOf(key))),
      };
    }
    expect(seen.unpipelined).toEqual({ outcomes: ['201', 'rolled back'], committedAfterRace: 1, retries: [201, 201], charges: [1, 1] });
    expect(seen.pipelined).toEqual(seen.unpipelined);
  });

  it('session advisory lock taken by the handler, then a failed completion (caught error): the next request on the same connection holds no advisory lock', async () => {
    for (const pipeline of [false, true]) {
      const app = await start(pipeline, async (ctx, tdb) => {
        if (ctx.get('x-probe')) {
          const { rows } = await tdb.query<{ n: number; pid: number }>(
            `SELECT (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid()) AS n, pg_backend_pid() AS pid`,
          );
          ctx.status = 200;
          ctx.body = rows[0];
          return;
        }
        await tdb.query('SELECT pg_advisory_lock(4242)');
        await charge(ctx, tdb);
        await tdb.query('SELECT 1/0').catch(() => undefined);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const first = await postJson(app.url, {}, { key: newKey(`adv-${pipeline}`) });
      expect(first.status).toBeGreaterThanOrEqual(500);
      const probe = await postJson(app.url, {}, { key: newKey(`adv-probe-${pipeline}`), headers: { 'x-probe': '1' } });
      expect({ pipeline, held: JSON.parse(probe.text).n }).toEqual({ pipeline, held: 0 });
    }
  });
});
