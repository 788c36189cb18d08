import { beforeAll, describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedCrashHarness } from '../helpers/pipelined-crash-harness.js';

/**
 * DISCARD TEMP refuses to drop a temp table with pending deferred trigger events (SQLSTATE 55006). When the
 * clean-up ran inside the transaction, ahead of COMMIT, such a handler could never commit; after the COMMIT the
 * triggers have fired. Whatever the outcome, the answer must agree with what committed; a retry charges at most once.
 */
describe('a temp table with deferred trigger events pending when the transaction ends', () => {
  const harness = pipelinedCrashHarness('atk_s7_cleanup_refused');
  const { start, chargesOf, recordsOf, problemType } = harness;

  beforeAll(async () => {
    const { db } = harness;
    await db.sql.query(`CREATE FUNCTION "${db.schema}".s7_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
  });

  const withPendingTempTrigger = async (ctx: Parameters<Parameters<typeof start>[1]>[0], tdb: Parameters<Parameters<typeof start>[1]>[1]) => {
    await harness.charge(ctx, tdb);
    await tdb.query('CREATE TEMP TABLE s7_pending (n int)');
    await tdb.query(`CREATE CONSTRAINT TRIGGER s7_pending_check AFTER INSERT ON s7_pending DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION "${harness.db.schema}".s7_noop()`);
    await tdb.query('INSERT INTO s7_pending VALUES (1)');
    ctx.status = 201;
    ctx.body = { ok: true };
  };

  for (const pipeline of [true, false]) {
    const name = pipeline ? 'pipelined' : 'unpipelined';

    it(`${name}: the answer agrees with what committed, the retry charges at most once, the next key is served`, async () => {
      const app = await start(pipeline, async (ctx, tdb) => {
        if (ctx.get('x-plain')) {
          await harness.charge(ctx, tdb);
          ctx.status = 201;
          ctx.body = { ok: true };
          return;
        }
        await withPendingTempTrigger(ctx, tdb);
      });
      const key = newKey(`pending-${name}`);
      const first = await postJson(app.url, {}, { key });
      const afterFirst = { charges: await chargesOf(key), records: await recordsOf(key) };
      const retry = await postJson(app.url, {}, { key });
      const next = newKey(`pending-next-${name}`);
      const nextAnswer = await postJson(app.url, {}, { key: next, headers: { 'x-plain': '1' } });
      // The answer and the database must agree: a 201 that committed once, or a problem with nothing committed.
      const committed = first.status === 201;
      expect({
        firstAgrees: committed
          ? afterFirst.charges === 1 && afterFirst.records === 1
          : problemType(first.text) !== first.text && afterFirst.charges === 0 && afterFirst.records === 0,
        retryAgrees: committed ? retry.status === 201 && retry.text === first.text : retry.status >= 500,
        charges: await chargesOf(key),
        next: nextAnswer.status,
      }).toEqual({ firstAgrees: true, retryAgrees: true, charges: committed ? 1 : 0, next: 201 });
    });

    // The deferred trigger fires at COMMIT and the temp table is dropped after it: a well-behaved handler commits.
    it(`${name}: a handler whose temp table has a pending deferred trigger commits`, async () => {
      const app = await start(pipeline, withPendingTempTrigger);
      const key = newKey(`pending-commit-${name}`);
      const first = await postJson(app.url, {}, { key });
      expect({ status: first.status, text: first.text, charges: await chargesOf(key) }).toEqual({ status: 201, text: '{"ok":true}', charges: 1 });
    });
  }
});
