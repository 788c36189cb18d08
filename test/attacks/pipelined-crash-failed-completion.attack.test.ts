import { describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedCrashHarness } from '../helpers/pipelined-crash-harness.js';

/** Attacks on transactional mode over a pipelined pool: a completion that cannot be stored (a streamed body, a result jsonb refuses) or that fails after the handler took a session lock (test/helpers/pipelined-crash-harness.ts). */
describe('pipelined transactional mode: crashes, timeouts, duplicates', () => {
  const harness = pipelinedCrashHarness('atk3_crash_completion');
  const { start, chargesOf, problemType, charge } = harness;

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
