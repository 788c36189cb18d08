import { beforeAll, describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedCrashHarness } from '../helpers/pipelined-crash-harness.js';

/**
 * A search_path that puts another schema ahead of pg_catalog makes an unqualified `pg_advisory_unlock_all()` call
 * that schema's function instead. When the clean-up ran inside the transaction, ahead of COMMIT, a handler's
 * transaction-local one was still in effect and this failed. The session advisory lock the handler took must
 * not reach the next request on the pooled connection.
 */
describe("a handler's search_path that shadows the clean-up's functions", () => {
  const harness = pipelinedCrashHarness('atk_s7_search_path');
  const { start, chargesOf } = harness;
  const lockId = 7_717_717;

  beforeAll(async () => {
    const { db } = harness;
    await db.sql.query(`CREATE FUNCTION "${db.schema}".pg_advisory_unlock_all() RETURNS void LANGUAGE sql AS 'SELECT NULL::void'`);
  });

  const cases: Array<[pipeline: boolean, local: boolean]> = [
    [true, true],
    [false, true],
    [true, false],
  ];
  for (const [pipeline, local] of cases) {
    it(`${pipeline ? 'pipelined' : 'unpipelined'}, ${local ? 'transaction-local' : 'session'} search_path: no session advisory lock is left on the pooled connection`, async () => {
      const app = await start(pipeline, async (ctx, tdb) => {
        await harness.charge(ctx, tdb);
        await tdb.query(`SELECT pg_advisory_lock(${lockId}), set_config('search_path', $1, $2)`, [`"${harness.db.schema}", pg_catalog`, local]);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`search-path-${pipeline}`);
      const first = await postJson(app.url, {}, { key });
      expect([first.status, await chargesOf(key)]).toEqual([201, 1]);
      const { rows } = await app.pool.query<{ locks: number }>(
        `SELECT count(*)::int AS locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted`,
      );
      expect(rows[0]!.locks).toBe(0);
      // Unlocks it, so the next test's pool does not find the lock taken by this one.
      await app.pool.query('SELECT pg_catalog.pg_advisory_unlock_all()');
    });
  }
});
