import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { APPLICATION_NAME, faultEnvironment, retryUntilFinal, timedPost } from './helpers/fault-environment.js';
import type { TcpProxy } from './helpers/tcp-proxy.js';
import { leaseLapsed } from './helpers/record-clock.js';

/** Connections of a request cut mid-flight (in the handler, around the claim, the completion and the COMMIT): one execution, one payment. (test/helpers/fault-environment.ts: the proxy, the apps and the checks.) */
describe('Faults between the app and Postgres', () => {
  const faults = faultEnvironment('faults_cut');
  const { schema, paymentsServer, leaseServer, paymentsOf, expectNothingStuck, cutAndObserve } = faults;
  let proxy: TcpProxy;
  let admin: pg.Pool;
  beforeAll(() => {
    ({ proxy, admin } = faults);
  });

  describe('connection cut during the handler, lease mode', () => {
    it('lets a retry take the record over once the lease runs out', async () => {
      const server = await leaseServer({
        during: async (key, attempt) => {
          if (key !== 'cut-in-handler' || attempt !== 1) return;
          proxy.refuse();
          proxy.cutAll();
        },
      });
      try {
        // The handler ran; its completion was lost with the connection, so its answer goes out unrecorded.
        const first = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(first.status).toBe(201);
        proxy.pass();

        const early = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(early.status).toBe(409);
        expect(Number(early.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);

        await leaseLapsed(admin, `"${schema}".idempotency_records`, 'cut-in-handler');
        const takeover = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(takeover.status).toBe(201);
        expect(JSON.parse(takeover.text)).toEqual({ key: 'cut-in-handler', attempt: 2 });

        const replay = await timedPost(`${server.url}/operations`, {}, { key: 'cut-in-handler' });
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.text).toBe(takeover.text);
        expect(server.executions.get('cut-in-handler')).toBe(2);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });

  describe('connection cut in transactional mode', () => {
    it('leaves one payment when the COMMIT never reaches Postgres', async () => {
      const server = await paymentsServer();
      try {
        const cut = proxy.cutWhen('COMMIT; SELECT pg_catalog.pg_advisory_unlock_all()', 'before');
        const first = await timedPost(`${server.url}/payments`, { amount: 250, currency: 'EUR' }, { key: 'commit-dropped', account: 'acct_commit_dropped' });
        await cut;
        expect(first.status).toBe(503);
        expect(await paymentsOf('acct_commit_dropped')).toEqual([]);

        const retry = await retryUntilFinal(`${server.url}/payments`, { amount: 250, currency: 'EUR' }, { key: 'commit-dropped', account: 'acct_commit_dropped' });
        expect(retry.status).toBe(201);
        expect(retry.headers.get('idempotent-replayed')).toBeNull();
        expect(await paymentsOf('acct_commit_dropped')).toEqual([JSON.parse(retry.text).id]);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it('leaves one payment, and replays it, when the answer to the COMMIT is lost', async () => {
      const server = await paymentsServer();
      try {
        const cut = proxy.cutWhen('COMMIT; SELECT pg_catalog.pg_advisory_unlock_all()', 'after');
        const first = await timedPost(`${server.url}/payments`, { amount: 300, currency: 'EUR' }, { key: 'commit-lost', account: 'acct_commit_lost' });
        await cut;
        expect(first.status).toBe(503);
        expect(JSON.parse(first.text).detail).toMatch(/could not be confirmed/);

        const retry = await retryUntilFinal(`${server.url}/payments`, { amount: 300, currency: 'EUR' }, { key: 'commit-lost', account: 'acct_commit_lost' });
        expect(retry.status).toBe(201);
        expect(retry.headers.get('idempotent-replayed')).toBe('true');
        expect(await paymentsOf('acct_commit_lost')).toEqual([JSON.parse(retry.text).id]);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it('regression: a connection cut while a transactional handler holds its client does not crash the process', async () => {
      // pg-pool leaves a checked-out client without an 'error' listener; the cut used to be an uncaught exception.
      const crashes: unknown[] = [];
      const onUncaught = (error: unknown) => crashes.push(error);
      process.on('uncaughtException', onUncaught);
      let armed = true;
      const server = await paymentsServer({
        afterInsert: async () => {
          if (!armed) return;
          armed = false;
          await cutAndObserve(); // the handler is between queries when its connection goes
        },
      });
      try {
        const first = await timedPost(`${server.url}/payments`, { amount: 5, currency: 'EUR' }, { key: 'idle-cut', account: 'acct_idle_cut' });
        expect(first.status).toBe(503);
        expect(crashes).toEqual([]);
        expect(await paymentsOf('acct_idle_cut')).toEqual([]);
        const retry = await retryUntilFinal(`${server.url}/payments`, { amount: 5, currency: 'EUR' }, { key: 'idle-cut', account: 'acct_idle_cut' });
        expect(await paymentsOf('acct_idle_cut')).toEqual([JSON.parse(retry.text).id]);
      } finally {
        process.off('uncaughtException', onUncaught);
        await server.close();
      }
    });

    it('never leaves two payments for one key, whatever the cut point and however the client retries', async () => {
      // Each fault is injected during the first attempt of its own key; the client then retries to a final answer.
      let fired = false;
      const cutWhen = (pattern: string, when: 'before' | 'after') => void proxy.cutWhen(pattern, when).then(() => (fired = true));
      const faults: Array<[string, () => void]> = [
        ['claim dropped', () => cutWhen('pg_try_advisory_xact_lock', 'before')],
        ['claim answer lost', () => cutWhen('pg_try_advisory_xact_lock', 'after')],
        ['insert dropped', () => cutWhen('INSERT INTO', 'before')],
        ['completion dropped', () => cutWhen(`status = 'completed'`, 'before')],
        ['completion answer lost', () => cutWhen(`status = 'completed'`, 'after')],
        ['commit dropped', () => cutWhen('COMMIT; SELECT pg_catalog.pg_advisory_unlock_all()', 'before')],
        ['commit answer lost', () => cutWhen('COMMIT; SELECT pg_catalog.pg_advisory_unlock_all()', 'after')],
      ];
      let inHandler: 'cut' | 'terminate' | undefined;
      const server = await paymentsServer({
        preparedStatements: false,
        afterInsert: async () => {
          const fault = inHandler;
          inHandler = undefined;
          if (fault === 'cut') {
            proxy.refuse();
            await cutAndObserve();
            proxy.pass();
          } else if (fault === 'terminate') {
            // What a failover or an administrator does: Postgres itself ends the app's sessions.
            await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [APPLICATION_NAME]);
          }
          fired ||= fault !== undefined;
        },
      });
      const rounds = [
        ...faults.map(([name, inject]) => ({ name, inject })),
        { name: 'cut in the handler', inject: () => void (inHandler = 'cut') },
        { name: 'sessions terminated by Postgres in the handler', inject: () => void (inHandler = 'terminate') },
      ];
      try {
        for (let round = 0; round < 3; round++) {
          for (const [index, fault] of rounds.entries()) {
            const account = `acct_cut_${round}_${index}`;
            const key = `cut-${round}-${index}`;
            fired = false;
            fault.inject();
            const first = await timedPost(`${server.url}/payments`, { amount: 10 + index, currency: 'EUR' }, { key, account });
            proxy.reset();
            expect(fired, `${fault.name} fired`).toBe(true);
            // A dropped payment INSERT fails the handler itself, which the example answers with its own 500.
            expect(fault.name === 'insert dropped' ? [201, 409, 500, 503] : [201, 409, 503], fault.name).toContain(first.status);

            const final = await retryUntilFinal(`${server.url}/payments`, { amount: 10 + index, currency: 'EUR' }, { key, account });
            expect(final.status, fault.name).toBe(201);
            expect(await paymentsOf(account), fault.name).toEqual([JSON.parse(final.text).id]);
            // A second retry after the final answer is a replay of the same payment.
            const again = await timedPost(`${server.url}/payments`, { amount: 10 + index, currency: 'EUR' }, { key, account });
            expect(again.text, fault.name).toBe(final.text);
          }
        }
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });

  describe('claim answer lost, lease mode', () => {
    it('leaves the record to its lease: 409 with Retry-After until then, then one execution', async () => {
      const server = await leaseServer({ preparedStatements: false });
      try {
        // Postgres commits the claim (a single statement), but its answer never reaches the app.
        const cut = proxy.cutWhen('DO NOTHING', 'after');
        const first = await timedPost(`${server.url}/operations`, {}, { key: 'claim-lost' });
        await cut;
        expect(first.status).toBe(503);
        expect(server.executions.get('claim-lost')).toBeUndefined();

        const early = await timedPost(`${server.url}/operations`, {}, { key: 'claim-lost' });
        expect(early.status).toBe(409);
        const final = await retryUntilFinal(`${server.url}/operations`, {}, { key: 'claim-lost' });
        expect(final.status).toBe(201);
        expect(server.executions.get('claim-lost')).toBe(1);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });
});
