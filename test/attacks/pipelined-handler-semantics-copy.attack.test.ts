import { beforeAll, describe, expect, it } from 'vitest';
import { keySeq, newKey, pipelinedSemanticsHarness, type Handler } from '../helpers/pipelined-semantics-harness.js';

/** COPY through ctx.idempotency.db over a pipelined and an unpipelined pool (test/helpers/pipelined-semantics-harness.ts). */
describe('pipelined transactional mode: the handler’s queries keep their semantics', () => {
  const harness = pipelinedSemanticsHarness('atk3_sem_copy');
  const { start, chargesOf, recordsOf, problemType, clean } = harness;
  let charges: string;
  beforeAll(() => {
    ({ charges } = harness);
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
});
