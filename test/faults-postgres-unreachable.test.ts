import { beforeAll, describe, expect, it } from 'vitest';
import { problemType } from '../src/index.js';
import { faultEnvironment, REQUEST_BOUND_MS, retryUntilFinal, timedPost } from './helpers/fault-environment.js';
import type { TcpProxy } from './helpers/tcp-proxy.js';

/** Postgres refuses or swallows connections before the claim: the app answers 503 and recovers. (test/helpers/fault-environment.ts: the proxy, the apps and the checks.) */
describe('Faults between the app and Postgres', () => {
  const faults = faultEnvironment('faults_unreachable');
  const { paymentsServer, leaseServer, paymentsOf, expectNothingStuck } = faults;
  let proxy: TcpProxy;
  beforeAll(() => {
    ({ proxy } = faults);
  });

  describe('Postgres unreachable before the claim', () => {
    it.each([
      ['refused', (p: TcpProxy) => (p.refuse(), p.cutAll())],
      ['a black hole', (p: TcpProxy) => (p.blackHole(), p.cutAll())],
    ])('answers 503 problem with Retry-After, never runs the handler, and recovers when Postgres is %s', async (fault, inject) => {
      const server = await leaseServer();
      const key = `while-down-${fault.replaceAll(' ', '-')}`;
      try {
        expect((await timedPost(`${server.url}/operations`, { n: 1 }, { key: 'warm-up' })).status).toBe(201);
        inject(proxy);

        const down = await timedPost(`${server.url}/operations`, { n: 2 }, { key });

        expect(down.status).toBe(503);
        expect(down.headers.get('retry-after')).toBe('5');
        expect(JSON.parse(down.text).type).toBe(problemType('storeUnavailable'));
        expect(down.elapsedMs).toBeLessThan(REQUEST_BOUND_MS);
        expect(server.executions.get(key)).toBeUndefined();

        proxy.pass();
        const after = await retryUntilFinal(`${server.url}/operations`, { n: 2 }, { key });
        expect(after.status).toBe(201);
        expect(after.headers.get('idempotent-replayed')).toBeNull();
        expect(server.executions.get(key)).toBe(1);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });

    it('answers 503 in transactional mode too, and no payment is written', async () => {
      const server = await paymentsServer();
      try {
        proxy.refuse();
        proxy.cutAll();
        const down = await timedPost(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key: 'tx-down', account: 'acct_tx_down' });
        expect(down.status).toBe(503);
        expect(down.headers.get('retry-after')).toBe('5');
        expect(await paymentsOf('acct_tx_down')).toEqual([]);

        proxy.pass();
        const after = await retryUntilFinal(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key: 'tx-down', account: 'acct_tx_down' });
        expect(after.status).toBe(201);
        expect(await paymentsOf('acct_tx_down')).toEqual([JSON.parse(after.text).id]);
        await expectNothingStuck();
      } finally {
        await server.close();
      }
    });
  });
});
