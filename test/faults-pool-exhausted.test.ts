import { describe, expect, it } from 'vitest';
import { faultEnvironment, REQUEST_BOUND_MS, retryUntilFinal, timedPost } from './helpers/fault-environment.js';
import { signal, until } from './helpers/events.js';

/** The pool exhausted: bounded waits, 503s, and retries that make each payment once. (test/helpers/fault-environment.ts: the proxy, the apps and the checks.) */
describe('Faults between the app and Postgres', () => {
  const faults = faultEnvironment('faults_pool');
  const { appPool, paymentsServer, paymentsOf, expectNothingStuck } = faults;

  describe('pool exhausted', () => {
    it('bounds the wait for a client and answers 503, never hangs, and runs no handler it refused', async () => {
      let executions = 0;
      let answered = 0;
      const handlersMayFinish = signal();
      const pool = appPool({ max: 2, connectionTimeoutMillis: 300 });
      const server = await paymentsServer({
        pool,
        afterInsert: async () => {
          executions++;
          await handlersMayFinish.promise; // holds the transaction's client, as a slow handler would
        },
      });
      try {
        const body = { amount: 500, currency: 'EUR' };
        const sent = Array.from({ length: 8 }, (_, i) =>
          timedPost(`${server.url}/payments`, body, { key: `busy-pool-${i}`, account: `acct_pool_${i}` }).finally(() => answered++),
        );
        // The handlers hold their clients until every other request has had its answer (a refusal, once its wait ran out).
        await until(() => (answered + executions === sent.length ? true : undefined), 'every request refused or in its handler', REQUEST_BOUND_MS);
        handlersMayFinish.fire();
        const answers = await Promise.all(sent);
        const statuses = answers.map((answer) => answer.status);
        expect(statuses.every((status) => status === 201 || status === 503)).toBe(true);
        expect(statuses.filter((status) => status === 503).length).toBeGreaterThan(0);
        expect(statuses.filter((status) => status === 201).length).toBe(executions);
        for (const answer of answers) expect(answer.elapsedMs).toBeLessThan(REQUEST_BOUND_MS);

        // The clients retry their 503s: every payment ends up made exactly once.
        for (let i = 0; i < 8; i++) {
          const final = await retryUntilFinal(`${server.url}/payments`, body, { key: `busy-pool-${i}`, account: `acct_pool_${i}` });
          expect(final.status).toBe(201);
          expect(await paymentsOf(`acct_pool_${i}`)).toEqual([JSON.parse(final.text).id]);
        }
        expect(executions).toBe(8);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });
});
