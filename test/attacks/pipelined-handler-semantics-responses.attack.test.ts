import { beforeAll, describe, expect, it } from 'vitest';
import { type TestDatabase } from '../helpers/databases.js';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedSemanticsHarness } from '../helpers/pipelined-semantics-harness.js';

/** Responses stored with the pipelined COMMIT: a header JSON cannot serialise, a huge body (test/helpers/pipelined-semantics-harness.ts). */
describe('pipelined transactional mode: the handler’s queries keep their semantics', () => {
  const harness = pipelinedSemanticsHarness('atk3_sem_responses');
  const { start, chargesOf, problemType } = harness;
  let db: TestDatabase;
  let charges: string;
  beforeAll(() => {
    ({ db, charges } = harness);
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
