import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { gate, keySeq, newKey, pipelinedCrashHarness, until } from '../helpers/pipelined-crash-harness.js';

/** Attacks on transactional mode over a pipelined pool: concurrent duplicates, an exhausted pool, two keys whose SERIALIZABLE handlers conflict (test/helpers/pipelined-crash-harness.ts). */
describe('pipelined transactional mode: crashes, timeouts, duplicates', () => {
  const harness = pipelinedCrashHarness('atk3_crash_concurrency');
  const { start, chargesOf, problemType, charge } = harness;
  let charges: string;
  let admin: pg.Client;
  beforeAll(() => {
    ({ charges, admin } = harness);
  });

  it('ten concurrent duplicates while the first holds its claim (onInProgress wait): one execution, every answer the same 201', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const release = gate();
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          entered();
          await release.opened;
          ctx.status = 201;
          ctx.body = { ok: true, n: 1 };
        },
        { max: 12, idempotency: { onInProgress: 'wait' } },
      );
      const key = newKey(`dups-${pipeline}`);
      const first = postJson(app.url, { a: 1 }, { key });
      await inHandler;
      const dups = Array.from({ length: 10 }, () => postJson(app.url, { a: 1 }, { key }));
      // Every duplicate has reached the server (they then wait, or try to claim, while the first holds its claim).
      try {
        await until(async () => {
          await admin.query('SELECT 1');
          return app.arrivals() >= 11;
        }, 'every duplicate at the server');
        await admin.query('SELECT 1');
      } finally {
        release.open();
      }
      release.open();
      const answers = await Promise.all([first, ...dups]);
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        statuses: answers.map((a) => a.status),
        bodies: new Set(answers.map((a) => a.text)).size,
        executions: app.executions(),
        charges: await chargesOf(key),
      };
    }
    expect(seen.pipelined).toEqual(seen.unpipelined);
    expect(seen.pipelined).toEqual({ statuses: Array(11).fill(201), bodies: 1, executions: 1, charges: 1 });
  });

  it('pool exhausted (max: 1): a duplicate waiting for the only connection gets the replay once the first commits', async () => {
    for (const pipeline of [false, true]) {
      const release = gate();
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          await charge(ctx, tdb);
          entered();
          await release.opened;
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { max: 1, idempotency: { onInProgress: 'wait' } },
      );
      const key = newKey(`exhausted-${pipeline}`);
      const first = postJson(app.url, { a: 1 }, { key });
      await inHandler;
      const dup = postJson(app.url, { a: 1 }, { key });
      await until(async () => {
        await admin.query('SELECT 1');
        return app.pool.waitingCount > 0;
      }, 'the duplicate waiting for the pool');
      release.open();
      const [a, b] = await Promise.all([first, dup]);
      expect({ a: a.status, b: b.status, replayed: b.headers.get('idempotent-replayed'), executions: app.executions(), charges: await chargesOf(key) }).toEqual({
        a: 201,
        b: 201,
        replayed: 'true',
        executions: 1,
        charges: 1,
      });
    }
  });

  it('SERIALIZABLE pool, two keys whose handlers conflict (read-then-write skew): the loser is rolled back, not half-committed; same answers on both pools; each key charges once after a retry', async () => {
    const seen: Record<string, unknown> = {};
    for (const pipeline of [false, true]) {
      const group = `skew-${pipeline}-${keySeq}`;
      let reads = 0;
      let bothRead!: () => void;
      const readBoth = new Promise<void>((resolve) => (bothRead = resolve));
      let racing = true;
      const app = await start(
        pipeline,
        async (ctx, tdb) => {
          // Each reads the group's charges, waits until the other has read too, then writes: a write skew.
          await tdb.query(`SELECT count(*) FROM ${charges} WHERE key LIKE $1`, [`${group}%`]);
          if (racing) {
            if (++reads === 2) bothRead();
            await readBoth;
          }
          await charge(ctx, tdb);
          ctx.status = 201;
          ctx.body = { ok: true };
        },
        { max: 4, pgOptions: '-c default_transaction_isolation=serializable' },
      );
      const keys = [`${group}-a-${newKey('s')}`, `${group}-b-${newKey('s')}`];
      const answers = await Promise.all(keys.map((key) => postJson(app.url, {}, { key })));
      racing = false;
      const afterRace = await Promise.all(keys.map((key) => chargesOf(key)));
      const retries = await Promise.all(keys.map((key) => postJson(app.url, {}, { key })));
      // Postgres reports the skew at the handler's write (a 500: the handler's own error) or at COMMIT (a 503:
      // the completion failed), whichever statement it checks first; timing decides, on either pool.
      const outcome = (a: { status: number; text: string }) =>
        a.status === 500 || (a.status === 503 && problemType(a.text) === 'urn:koa-idempotency:problem:store-unavailable') ? 'rolled back' : a.status;
      seen[pipeline ? 'pipelined' : 'unpipelined'] = {
        outcomes: answers.map(outcome).map(String).sort(),
        committedAfterRace: afterRace.reduce((a, b) => a + b, 0),
        retries: retries.map((r) => r.status),
        charges: await Promise.all(keys.map((key) => chargesOf(key))),
      };
    }
    expect(seen.unpipelined).toEqual({ outcomes: ['201', 'rolled back'], committedAfterRace: 1, retries: [201, 201], charges: [1, 1] });
    expect(seen.pipelined).toEqual(seen.unpipelined);
  });
});
