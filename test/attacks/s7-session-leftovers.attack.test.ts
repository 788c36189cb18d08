import { describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedCrashHarness, type Tdb } from '../helpers/pipelined-crash-harness.js';

/**
 * One handler leaves everything at once on the pipelined connection (a temp table, a cursor WITH HOLD over it, a
 * LISTEN and a session advisory lock through DO blocks, a temp table ON COMMIT DROP): the clean-up now runs inside
 * the transaction, ahead of COMMIT. The next request on the same connection must find none of it, and its
 * handler, which makes the very same objects, must commit.
 */
describe('everything a handler can leave on the session, then the next request on the connection', () => {
  const harness = pipelinedCrashHarness('atk_s7_leftovers');
  const { start, chargesOf } = harness;
  const lockId = 7_727_727;

  const leaveEverything = async (tdb: Tdb) => {
    await tdb.query('CREATE TEMP TABLE s7_left (n int)');
    await tdb.query('INSERT INTO s7_left SELECT generate_series(1, 100)');
    await tdb.query('CREATE TEMP TABLE s7_dropped (n int) ON COMMIT DROP');
    await tdb.query(`DO $$ BEGIN PERFORM pg_advisory_lock(${lockId}); EXECUTE 'LISTEN s7_left_channel'; END $$`);
    await tdb.query('DECLARE s7_cursor CURSOR WITH HOLD FOR SELECT n FROM s7_left');
  };

  for (const pipeline of [true, false]) {
    it(`${pipeline ? 'pipelined' : 'unpipelined'}: nothing is left, and the same handler commits again on that connection`, async () => {
      const leftovers: unknown[] = [];
      const app = await start(pipeline, async (ctx, tdb) => {
        const { rows } = await tdb.query<{ locks: number; channels: number; cursors: number; temps: number }>(`SELECT
          (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND objid = ${lockId} AND granted) AS locks,
          (SELECT count(*)::int FROM pg_listening_channels()) AS channels,
          (SELECT count(*)::int FROM pg_cursors WHERE name = 's7_cursor') AS cursors,
          (SELECT count(*)::int FROM pg_class WHERE relpersistence = 't' AND relname LIKE 's7_%') AS temps`);
        leftovers.push(rows[0]);
        await leaveEverything(tdb);
        await harness.charge(ctx, tdb);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const keys = [newKey(`leftovers-a-${pipeline}`), newKey(`leftovers-b-${pipeline}`), newKey(`leftovers-c-${pipeline}`)];
      const statuses: number[] = [];
      for (const key of keys) statuses.push((await postJson(app.url, {}, { key })).status);
      const none = { locks: 0, channels: 0, cursors: 0, temps: 0 };
      expect({ statuses, leftovers, charges: await Promise.all(keys.map((key) => chargesOf(key))) }).toEqual({
        statuses: [201, 201, 201],
        leftovers: [none, none, none],
        charges: [1, 1, 1],
      });
    });
  }
});
