import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/entries/postgres.js';
import { openChargesSchema, type ChargesSchema } from '../helpers/charges-schema.js';
import { until } from '../helpers/child-processes.js';

const layouts = [
  { layout: 'a plain table', partitionedTable: undefined },
  { layout: 'a table partitioned by time', partitionedTable: 'partitioned_records' },
];

/**
 * Crash tests: a real server process SIGKILLs itself at a chosen point of a request; then a fresh
 * process serves the client's retry. Exactly one business row per key, every time, on the plain table
 * and on the table partitioned by time.
 */
describe.each(layouts)('crashes (real child processes, SIGKILL), $layout', ({ partitionedTable }) => {
  let db: ChargesSchema;
  let pool: pg.Pool;
  let store: PostgresStore;
  let schema: string;
  const server = (env: Record<string, string>) => db.server(partitionedTable ? { ...env, PARTITIONED_TABLE: partitionedTable } : env);

  beforeAll(async () => {
    db = await openChargesSchema('crash');
    ({ pool, store, schema } = db);
    if (partitionedTable) {
      store = new PostgresStore({ pool, schema, table: partitionedTable, partitioning: true, replayCacheEntries: 0 });
      await store.migrate();
    }
  });
  afterAll(async () => {
    if (partitionedTable) await store?.close();
    await db?.close();
  });

  function charge(url: string, key: string, account = 'acct') {
    return fetch(`${url}/charges`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'x-account': account, 'content-type': 'application/json' },
      body: JSON.stringify({ amount: 100 }),
    });
  }

  async function count(table: 'charges' | 'step_runs', key: string, extra = ''): Promise<number> {
    const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".${table} WHERE key = $1 ${extra}`, [key]);
    return rows[0]!.n;
  }

  /** Resolves once the record's lease has run out by the database's clock: a retry can take over. */
  function leaseLapsed(key: string): Promise<void> {
    return until(
      async () => (await store.find('acct', key))?.leaseRemainingMs === 0,
      10_000,
      () => `the lease on ${key} never lapsed`,
    );
  }

  describe('transactional mode', () => {
    it.each([
      ['before-claim', false],
      ['in-handler', false],
      ['after-writes', false],
      ['after-commit', true],
    ])('leaves nothing or one completed charge when killed at %s; the retry makes it exactly one', async (point, committed) => {
      const key = `crash-${point}-${Date.now()}`;
      const doomed = await server({ MODE: 'transactional', CRASH_AT: point });
      await expect(charge(doomed.url, key)).rejects.toThrow();
      expect(await doomed.exited).toBe('SIGKILL');

      // No zombie: either no record, or a completed one with its charge.
      const record = await store.find('acct', key);
      expect(record === undefined ? 'none' : record.status).toBe(committed ? 'completed' : 'none');
      expect(await count('charges', key)).toBe(committed ? 1 : 0);

      const healthy = await server({ MODE: 'transactional' });
      const retry = await charge(healthy.url, key);
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe(committed ? 'true' : null);
      const again = await charge(healthy.url, key);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(await again.text()).toBe(await retry.text());
      expect(await count('charges', key)).toBe(1);
      await healthy.stop();
    });
  });

  describe('lease mode', () => {
    it('skips a recovery step completed before the crash when the retry takes over', async () => {
      const key = `steps-${Date.now()}`;
      const doomed = await server({ MODE: 'lease', CRASH_AT: 'after-step-1', LEASE_MS: '1000' });
      await expect(charge(doomed.url, key)).rejects.toThrow();
      expect(await doomed.exited).toBe('SIGKILL');
      expect((await store.find('acct', key))?.steps).toEqual({ reserve: { reservation: `r-${key}` } });

      const healthy = await server({ MODE: 'lease', LEASE_MS: '1000' });
      const early = await charge(healthy.url, key);
      // Until the dead worker's lease runs out the key is still in progress.
      expect([201, 409]).toContain(early.status);
      if (early.status === 409) await leaseLapsed(key);
      const retry = early.status === 201 ? early : await charge(healthy.url, key);
      expect(retry.status).toBe(201);
      expect(await count('step_runs', key, `AND step = 'reserve'`)).toBe(1);
      expect(await count('step_runs', key, `AND step = 'capture'`)).toBe(1);
      const { rows } = await pool.query<{ attempt: number }>(`SELECT attempt FROM "${schema}".charges WHERE key = $1`, [key]);
      expect(rows).toEqual([{ attempt: 2 }]);
      await healthy.stop();
    });

    it('refuses the late completion of a frozen worker after another took over (fencing)', async () => {
      const key = `zombie-${Date.now()}`;
      // The handler holds until released: the zombie is frozen inside it, whatever the machine's load.
      const zombie = await server({ MODE: 'lease', LEASE_MS: '600', HOLD_HANDLER: '1' });
      const zombieAnswer = charge(zombie.url, key).then(
        (r) => r.status,
        () => 'no answer',
      );
      await zombie.printed(JSON.stringify({ handler: 'started' }));
      zombie.process.kill('SIGSTOP'); // frozen: no lease renewals, no progress
      await leaseLapsed(key);

      const taker = await server({ MODE: 'lease', LEASE_MS: '600' });
      const takeover = await charge(taker.url, key);
      expect(takeover.status).toBe(201);
      const takerBody = await takeover.text();
      const recordAfterTakeover = await store.find('acct', key);
      expect(recordAfterTakeover?.attempt).toBe(2);

      zombie.process.kill('SIGCONT');
      zombie.process.kill('SIGUSR2'); // out of its handler, on to its step write and completion
      // The zombie resumes; its step write and completion carry the old fence and are refused.
      expect(await zombieAnswer).toBe(500);
      const record = await store.find('acct', key);
      expect(record?.fence).toBe(recordAfterTakeover?.fence);
      expect(record?.response?.body?.toString()).toBe(takerBody);
      const replay = await charge(taker.url, key);
      expect(await replay.text()).toBe(takerBody);
      await Promise.all([zombie.stop(), taker.stop()]);
    });
  });
});
