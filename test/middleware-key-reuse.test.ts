import { describe, expect, it } from 'vitest';
import { problemType } from '../src/index.js';
import { databaseTargets } from './helpers/databases.js';
import { postJson } from './helpers/http.js';
import { middlewareHarness, newKey } from './helpers/middleware-harness.js';

/** A key reused with another request is refused (422), and a key belongs to its scope (test/helpers/middleware-harness.ts). */
describe.each(databaseTargets())('idempotency middleware on $name', (target) => {
  const middleware = middlewareHarness(target, 'middleware_reuse');
  const { start } = middleware;

  describe('mismatch', () => {
    it.each([
      ['a different body', '/orders', { amount: 6 }],
      ['a different path', '/orders/7/refund', { amount: 5 }],
    ])('answers 422 to the same key with %s, and runs nothing', async (_label, path, body) => {
      const { url, executions } = await start();
      const key = newKey('mismatch');
      await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const other = await postJson(`${url}${path}`, body, { key, account: 'a' });
      expect(other.status).toBe(422);
      expect(other.headers.get('content-type')).toBe('application/problem+json');
      expect(JSON.parse(other.text)).toMatchObject({ type: problemType('keyReused'), status: 422 });
      expect(executions).toHaveLength(1);
    });

    it('answers 422 when the method and path differ (PATCH /orders/1 after POST /orders)', async () => {
      const { url, executions } = await start();
      const key = newKey('method');
      await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      const patchRoute = await fetch(`${url}/orders/1`, {
        method: 'PATCH',
        headers: { 'idempotency-key': key, authorization: 'Bearer a', 'content-type': 'application/json' },
        body: '{"amount":5}',
      });
      expect(patchRoute.status).toBe(422);
      expect(executions).toHaveLength(1);
    });
  });

  describe('scope', () => {
    it('keeps the same key of two tenants apart: each runs once and gets its own replay', async () => {
      const { url, executions } = await start();
      const key = newKey('tenant');
      const a1 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-a' } });
      const b1 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-b' } });
      const a2 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-a' } });
      const b2 = await postJson(`${url}/orders`, { amount: 5 }, { key, headers: { 'x-account': 'tenant-b' } });
      expect(executions.map((e) => e.account)).toEqual(['tenant-a', 'tenant-b']);
      expect(a2.text).toBe(a1.text);
      expect(b2.text).toBe(b1.text);
      expect(a1.text).not.toBe(b1.text);
    });
  });
});
