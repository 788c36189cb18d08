import { beforeAll, describe, expect, it } from 'vitest';
import { type TestDatabase } from '../helpers/databases.js';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedSemanticsHarness } from '../helpers/pipelined-semantics-harness.js';

/** The handler's queries over a pipelined pool get their own results and commit in order: Promise.all, savepoints, unawaited writes, a parameter that fails client-side (test/helpers/pipelined-semantics-harness.ts). */
describe('pipelined transactional mode: the handler’s queries keep their semantics', () => {
  const harness = pipelinedSemanticsHarness('atk3_sem_results');
  const { start, chargesOf } = harness;
  let db: TestDatabase;
  let charges: string;
  beforeAll(() => {
    ({ db, charges } = harness);
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
});
