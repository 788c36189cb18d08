import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_URL } from '../helpers/databases.js';
import { postJson } from '../helpers/http.js';
import { keySeq, newKey, pipelinedCrashHarness } from '../helpers/pipelined-crash-harness.js';

/** Attacks on transactional mode over a pipelined pool: a server statement_timeout during the claim, the pool's client-side query_timeout in the handler (test/helpers/pipelined-crash-harness.ts). */
describe('pipelined transactional mode: crashes, timeouts, duplicates', () => {
  const harness = pipelinedCrashHarness('atk3_crash_timeouts');
  const { start, chargesOf, recordsOf, problemType, charge } = harness;
  let records: string;
  let admin: pg.Client;
  beforeAll(() => {
    ({ records, admin } = harness);
  });

  it('statement_timeout hit by the claim (blocked behind an uncommitted duplicate insert): the handler never runs, no record, the connection serves the next key', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { pgOptions: '-c statement_timeout=300', lockTimeoutMs: 60_000 },
      );
      const key = newKey(`stmt-timeout-${pipeline}`);
      const blocker = new pg.Client({ connectionString: DATABASE_URL });
      await blocker.connect();
      let answer;
      try {
        await blocker.query('BEGIN');
        await blocker.query(
          `INSERT INTO ${records} (scope, key, status, fingerprint, fingerprint_version, fence, expires_at) VALUES ('', $1, 'in_progress', 'x', 1, 1, now() + interval '1 hour')`,
          [key],
        );
        answer = await postJson(app.url, {}, { key });
        await blocker.query('ROLLBACK');
      } finally {
        await blocker.end();
      }
      const next = newKey(`stmt-timeout-next-${pipeline}`);
      const nextAnswer = await postJson(app.url, {}, { key: next });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        executions: app.executions(),
        charges: await chargesOf(key),
        records: await recordsOf(key),
        next: nextAnswer.status,
        nextCharges: await chargesOf(next),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ executions: 1, charges: 0, records: 0, next: 201, nextCharges: 1 });
  });

  it('a handler query hitting the pool’s client-side query_timeout, caught, then 201: exactly once either way (the pipelined pool loses the connection, so 503 then a run; the unpipelined one commits, so 201 then a replay, as the README says)', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const gateId = 800_000 + keySeq;
      await admin.query('SELECT pg_advisory_lock($1)', [gateId]);
      let timedOut!: () => void;
      const handlerTimedOut = new Promise<void>((resolve) => (timedOut = resolve));
      let first = true;
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          if (first) {
            first = false;
            await tdb.query('SELECT pg_advisory_xact_lock($1)', [gateId]).catch(() => timedOut());
          }
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { queryTimeoutMs: 300 },
      );
      const key = newKey(`qtimeout-${pipeline}`);
      const pending = postJson(app.url, {}, { key });
      await handlerTimedOut;
      await admin.query('SELECT pg_advisory_unlock($1)', [gateId]);
      const answer = await pending;
      const retry = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        retry: retry.status,
        retryReplayed: retry.headers.get('idempotent-replayed'),
        charges: await chargesOf(key),
      };
    }
    // node-postgres destroys a pipelined connection whose sent query timed out (pg/lib/client.js), taking the
    // claim's transaction with it; an unpipelined one leaves the statement running to commit with the response.
    expect(seen.unpipelined).toEqual({ status: 201, type: undefined, retry: 201, retryReplayed: 'true', charges: 1 });
    expect(seen.pipelined).toEqual({ status: 503, type: 'urn:koa-idempotency:problem:store-unavailable', retry: 201, retryReplayed: null, charges: 1 });
  });
});
