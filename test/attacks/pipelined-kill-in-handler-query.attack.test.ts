import type Koa from 'koa';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { newKey, pipelinedCrashHarness, until, type Tdb } from '../helpers/pipelined-crash-harness.js';
import { postJson } from '../helpers/http.js';

/**
 * Black-box attack on transactional mode, on a pipelined and an unpipelined pool, with the claim's connection
 * killed (pg_terminate_backend) DURING the handler's own query (blocked on an advisory lock the test holds). A
 * handler that catches the error and answers 201 anyway, or flushes its 201 head first, must not leave its client
 * with a complete 2xx: nothing was committed. The key ends up free and runs once more, charging once overall.
 */

const LOCK = 424242;

describe('transactional mode: the connection killed during the handler’s query', () => {
  const harness = pipelinedCrashHarness('atk_kill_handler_query');
  const { start, chargesOf, recordsOf, charge, problemType } = harness;
  let admin: pg.Client;
  beforeAll(() => {
    ({ admin } = harness);
  });

  /** Kills the backend once it waits for the test's advisory lock; returns after the kill. */
  async function killWaiter(): Promise<void> {
    const waiting = async () => {
      const { rows } = await admin.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted`, [LOCK]);
      return rows[0]?.pid;
    };
    await until(async () => (await waiting()) !== undefined, 'the handler waiting for the advisory lock');
    await admin.query('SELECT pg_terminate_backend($1)', [await waiting()]);
  }

  /** The handler's query that blocks on the test's lock; its failure is caught, as a careless handler does. */
  async function blockedQueryCaught(ctx: Koa.Context, tdb: Tdb, first: { value: boolean }) {
    await charge(ctx, tdb);
    if (!first.value) return;
    first.value = false;
    await tdb.query('SELECT pg_advisory_xact_lock($1)', [LOCK]).catch(() => undefined);
  }

  it('the handler catches the failed query and answers 201: 503 store-unavailable (retryable), nothing committed, the retry charges once; same on both pools, every time', async () => {
    // The answer on the pipelined pool depends on timing: ten kills per pool.
    const answers: Record<string, Set<string>> = { unpipelined: new Set(), pipelined: new Set() };
    const outcomes: Record<string, Set<string>> = { unpipelined: new Set(), pipelined: new Set() };
    for (const pipeline of [false, true]) {
      for (let round = 0; round < 10; round++) {
        const first = { value: true };
        const app = await start(pipeline, async (ctx, tdb) => {
          await blockedQueryCaught(ctx, tdb, first);
          ctx.status = 201;
          ctx.body = { ok: true };
        });
        await admin.query('SELECT pg_advisory_lock($1)', [LOCK]);
        const key = newKey(`kill-in-query-${pipeline}`);
        const answering = postJson(app.url, {}, { key });
        await killWaiter();
        await admin.query('SELECT pg_advisory_unlock($1)', [LOCK]);
        const answer = await answering;
        const afterFirst = { charges: await chargesOf(key), records: await recordsOf(key) };
        const retry = await postJson(app.url, {}, { key });
        const replay = await postJson(app.url, {}, { key });
        const pool = pipeline ? 'pipelined' : 'unpipelined';
        answers[pool]!.add(`${answer.status} ${problemType(answer.text)}`);
        outcomes[pool]!.add(JSON.stringify({ afterFirst, retry: retry.status, replayed: replay.headers.get('idempotent-replayed'), charges: await chargesOf(key) }));
      }
    }
    const once = JSON.stringify({ afterFirst: { charges: 0, records: 0 }, retry: 201, replayed: 'true', charges: 1 });
    // What happens now: the pipelined pool answers some kills 500 request-failed (retryable: false, so
    // idempotentFetch gives up), with the detail "Postgres refused to commit the transaction of this request (a
    // deferred constraint trigger or check failed)": the COMMIT's error is classified as a refusal, not as the lost
    // connection it is. The unpipelined pool answers 503 store-unavailable for the same kill.
    expect({ unpipelined: [...answers.unpipelined!], pipelined: [...answers.pipelined!] }).toEqual({
      unpipelined: ['503 urn:koa-idempotency:problem:store-unavailable'],
      pipelined: ['503 urn:koa-idempotency:problem:store-unavailable'],
    });
    expect({ unpipelined: [...outcomes.unpipelined!], pipelined: [...outcomes.pipelined!] }).toEqual({ unpipelined: [once], pipelined: [once] });
  });
});
