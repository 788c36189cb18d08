import { beforeAll, describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedCrashHarness } from '../helpers/pipelined-crash-harness.js';

/**
 * The session clean-up (advisory unlock, UNLISTEN *, CLOSE ALL, DISCARD TEMP) runs after COMMIT; it once ran
 * inside the transaction, ahead of it, and this failed then. A deferred constraint trigger runs at COMMIT: whatever
 * session state it leaves (a session advisory lock, a LISTEN, a temp table) must still not reach the next request on the pooled
 * connection, which the guarantee promises "even through a DO block or a function".
 */
describe('session state left by a function that runs at COMMIT (deferred constraint trigger)', () => {
  const harness = pipelinedCrashHarness('atk_s7_commit_state');
  const { start, chargesOf } = harness;
  const lockId = 7_707_707;
  let audited: string;

  beforeAll(async () => {
    const { db } = harness;
    audited = `"${db.schema}".audited`;
    await db.sql.query(`CREATE TABLE ${audited} (key text NOT NULL)`);
    await db.sql.query(`CREATE FUNCTION "${db.schema}".audit_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_advisory_lock(${lockId});
        EXECUTE 'LISTEN s7_commit_channel';
        CREATE TEMP TABLE IF NOT EXISTS s7_commit_temp (n int);
        RETURN NULL;
      END $$`);
    await db.sql.query(`CREATE CONSTRAINT TRIGGER audit_at_commit AFTER INSERT ON ${audited} DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION "${db.schema}".audit_at_commit()`);
  });

  for (const pipeline of [true, false]) {
    it(`${pipeline ? 'pipelined' : 'unpipelined'} pool: the next request on the connection finds no advisory lock, LISTEN or temp table`, async () => {
      const app = await start(pipeline, async (ctx, tdb) => {
        await harness.charge(ctx, tdb);
        await tdb.query(`INSERT INTO ${audited} (key) VALUES ($1)`, [ctx.idempotency!.key]);
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`commit-state-${pipeline}`);
      const first = await postJson(app.url, {}, { key });
      expect(first.status).toBe(201);
      expect(await chargesOf(key)).toBe(1);
      // max: 1, so this is the connection the request used, back in the pool.
      const { rows } = await app.pool.query<{ locks: number; channels: number; temps: number }>(`SELECT
        (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted) AS locks,
        (SELECT count(*)::int FROM pg_listening_channels()) AS channels,
        (SELECT count(*)::int FROM pg_class WHERE relpersistence = 't' AND relname = 's7_commit_temp') AS temps`);
      expect(rows[0]).toEqual({ locks: 0, channels: 0, temps: 0 });
    });
  }
});
