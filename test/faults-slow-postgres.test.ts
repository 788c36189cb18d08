import { beforeAll, describe, expect, it } from 'vitest';
import { faultEnvironment, QUERY_TIMEOUT_MS, REQUEST_BOUND_MS, retryUntilFinal, timedPost } from './helpers/fault-environment.js';
import type { TcpProxy } from './helpers/tcp-proxy.js';

/** Postgres slow to answer: moderate latency is served, latency past the query timeout is a bounded 503. (test/helpers/fault-environment.ts: the proxy, the apps and the checks.) */
describe('Faults between the app and Postgres', () => {
  const faults = faultEnvironment('faults_slow');
  const { paymentsServer, leaseServer, paymentsOf, expectNothingStuck } = faults;
  let proxy: TcpProxy;
  beforeAll(() => {
    ({ proxy } = faults);
  });

  describe('slow Postgres', () => {
    it('still answers every request, correctly, under moderate latency', async () => {
      const server = await leaseServer();
      try {
        proxy.latencyMs = 40;
        const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => timedPost(`${server.url}/operations`, {}, { key: `slow-ok-${i}` })));
        expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill(201));
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it.each([
      ['lease', false],
      ['transactional', true],
    ])('fires the query timeout and answers 503 within its bound when latency exceeds it (%s mode)', async (mode, transactional) => {
      const server = await paymentsServer({ idempotency: { transactional } });
      const account = `acct_slow_${mode}`;
      try {
        proxy.latencyMs = QUERY_TIMEOUT_MS + 500;
        const body = { amount: 700, currency: 'EUR' };
        const answers = await Promise.all(Array.from({ length: 3 }, (_, i) => timedPost(`${server.url}/payments`, body, { key: `slow-${mode}-${i}`, account })));
        for (const answer of answers) {
          expect(answer.status).toBe(503);
          expect(answer.elapsedMs).toBeLessThan(REQUEST_BOUND_MS);
        }

        proxy.latencyMs = 0;
        const finals = [];
        for (let i = 0; i < 3; i++) finals.push(await retryUntilFinal(`${server.url}/payments`, body, { key: `slow-${mode}-${i}`, account }));
        expect(finals.map((answer) => answer.status)).toEqual([201, 201, 201]);
        expect((await paymentsOf(account)).sort()).toEqual(finals.map((answer) => JSON.parse(answer.text).id).sort());
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });
});
