import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_URL } from '../helpers/databases.js';
import { postJson } from '../helpers/http.js';
import { gate, keySeq, newKey, pipelinedCrashHarness, until } from '../helpers/pipelined-crash-harness.js';

/** Attacks on transactional mode over a pipelined pool: its connection killed between the write and the completion, during the pipelined COMMIT, while the claim waits (test/helpers/pipelined-crash-harness.ts). */
describe('pipelined transactional mode: crashes, timeouts, duplicates', () => {
  const harness = pipelinedCrashHarness('atk3_crash_killed');
  const { start, chargesOf, recordsOf, problemType, charge, backendGone } = harness;
  let records: string;
  let gated: string;
  let admin: pg.Client;
  beforeAll(() => {
    ({ records, gated, admin } = harness);
  });

  it('connection killed between the handler’s write and the completion: nothing commits, same answer both pools, the retry charges once', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      let kill = true;
      let pidSeen!: (pid: number) => void;
      const pidPromise = new Promise<number>((resolve) => (pidSeen = resolve));
      const resume = gate();
      const app = await start(pipeline, async (ctx, tdb) => {
        await charge(ctx, tdb);
        if (kill) {
          kill = false;
          const { rows } = await tdb.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
          pidSeen(rows[0]!.pid);
          await resume.opened;
        }
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`kill-mid-${pipeline}`);
      const first = postJson(app.url, {}, { key });
      const pid = await pidPromise;
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await until(backendGone(pid), 'the killed backend gone');
      resume.open();
      const answer = await first;
      const afterFirst = { charges: await chargesOf(key), records: await recordsOf(key) };
      const retry = await postJson(app.url, {}, { key });
      const replay = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        afterFirst,
        retry: retry.status,
        replayed: replay.headers.get('idempotent-replayed'),
        charges: await chargesOf(key),
        executions: app.executions(),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ afterFirst: { charges: 0, records: 0 }, retry: 201, replayed: 'true', charges: 1, executions: 2 });
  });

  it('connection killed during the pipelined COMMIT (blocked in a deferred trigger): the client is told the outcome is unknown, and the retry charges once overall', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const gateId = 900_000 + keySeq;
      await admin.query('SELECT pg_advisory_lock($1)', [gateId]);
      let block = true;
      const app = await start(pipeline, async (ctx, tdb) => {
        await charge(ctx, tdb);
        if (block) {
          block = false;
          await tdb.query(`INSERT INTO ${gated} (key, gate) VALUES ($1, $2)`, [ctx.idempotency!.key, gateId]);
        }
        ctx.status = 201;
        ctx.body = { ok: true };
      });
      const key = newKey(`kill-commit-${pipeline}`);
      const first = postJson(app.url, {}, { key });
      let pid = 0;
      await until(async () => {
        const { rows } = await admin.query(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1 AND classid = 0`, [gateId]);
        pid = rows[0]?.pid ?? 0;
        return pid !== 0;
      }, 'the COMMIT waiting in the deferred trigger');
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      const answer = await first;
      await admin.query('SELECT pg_advisory_unlock($1)', [gateId]);
      const afterFirst = { charges: await chargesOf(key), records: await recordsOf(key) };
      const retry = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        afterFirst,
        retry: retry.status,
        charges: await chargesOf(key),
        executions: app.executions(),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ status: 503, afterFirst: { charges: 0, records: 0 }, retry: 201, charges: 1, executions: 2 });
  });

  it('connection killed while the pipelined claim waits (behind an uncommitted duplicate row): the handler never runs, a 5xx, the pool serves the next key', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { lockTimeoutMs: 60_000 },
      );
      const key = newKey(`kill-claim-${pipeline}`);
      const blocker = new pg.Client({ connectionString: DATABASE_URL });
      await blocker.connect();
      let answer;
      try {
        await blocker.query('BEGIN');
        await blocker.query(
          `INSERT INTO ${records} (scope, key, status, fingerprint, fingerprint_version, fence, expires_at) VALUES ('', $1, 'in_progress', 'x', 1, 1, now() + interval '1 hour')`,
          [key],
        );
        const blockerPid = (await blocker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
        const pending = postJson(app.url, {}, { key });
        let pid = 0;
        await until(async () => {
          const { rows } = await admin.query(`SELECT pid FROM pg_locks WHERE NOT granted AND locktype = 'transactionid' AND pid <> $1`, [blockerPid]);
          pid = rows[0]?.pid ?? 0;
          return pid !== 0;
        }, 'the claim waiting behind the blocker');
        await admin.query('SELECT pg_terminate_backend($1)', [pid]);
        answer = await pending;
        await blocker.query('ROLLBACK');
      } finally {
        await blocker.end();
      }
      const next = newKey(`kill-claim-next-${pipeline}`);
      const nextAnswer = await postJson(app.url, {}, { key: next });
      const retry = await postJson(app.url, {}, { key });
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        status: answer.status,
        type: problemType(answer.text),
        next: nextAnswer.status,
        retry: retry.status,
        charges: await chargesOf(key),
        executions: app.executions(),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toMatchObject({ next: 201, retry: 201, charges: 1, executions: 2 });
  });
});
