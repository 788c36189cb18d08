import { beforeAll, describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedSemanticsHarness } from '../helpers/pipelined-semantics-harness.js';

/** The handler's failing queries over a pipelined pool: caught, in a Promise.all, unawaited, deferred to COMMIT, in flight when it throws; nothing commits, as unpipelined (test/helpers/pipelined-semantics-harness.ts). */
describe('pipelined transactional mode: the handler’s queries keep their semantics', () => {
  const harness = pipelinedSemanticsHarness('atk3_sem_failed');
  const { start, chargesOf, bothPools, clean } = harness;
  let charges: string;
  let kids: string;
  beforeAll(() => {
    ({ charges, kids } = harness);
  });

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
});
