import { describe, expect, it } from 'vitest';
import { problemType } from '../src/index.js';
import { databaseTargets } from './helpers/databases.js';
import { postJson } from './helpers/http.js';
import { middlewareHarness, newKey } from './helpers/middleware-harness.js';

/** The Idempotency-Key header: optional or required, malformed, on methods the middleware leaves alone (test/helpers/middleware-harness.ts). */
describe.each(databaseTargets())('idempotency middleware on $name', (target) => {
  const middleware = middlewareHarness(target, 'middleware_header');
  const { start } = middleware;

  describe('keys', () => {
    it('passes requests without a key through when keys are optional', async () => {
      const { url, executions } = await start();
      await postJson(`${url}/orders`, { amount: 5 }, { account: 'a' });
      await postJson(`${url}/orders`, { amount: 5 }, { account: 'a' });
      expect(executions).toHaveLength(2);
    });

    it('answers 400 key-missing when a key is required', async () => {
      const { url, executions } = await start({ required: true });
      const answer = await postJson(`${url}/orders`, { amount: 5 }, { account: 'a' });
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.text).type).toBe(problemType('keyMissing'));
      expect(executions).toHaveLength(0);
    });

    it.each([
      ['a comma (two merged headers)', 'k1, k2'],
      ['a key longer than maxKeyLength', 'k'.repeat(300)],
      ['a space inside a bare key', 'two words'],
      ['an unterminated quoted key', '"abc'],
      ['a bad escape in a quoted key', '"a\\bc"'],
      ['an empty quoted key', '""'],
    ])('answers 400 key-invalid for %s and runs nothing', async (_label, key) => {
      const { url, executions } = await start();
      const answer = await postJson(`${url}/orders`, { amount: 5 }, { key, account: 'a' });
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.text).type).toBe(problemType('keyInvalid'));
      expect(executions).toHaveLength(0);
    });

    it('leaves methods outside `methods` alone (GET with a key runs every time)', async () => {
      const { url, executions } = await start();
      const key = newKey('get');
      await fetch(`${url}/orders`, { headers: { 'idempotency-key': key, 'x-account': 'a' } });
      await fetch(`${url}/orders`, { headers: { 'idempotency-key': key, 'x-account': 'a' } });
      expect(executions).toHaveLength(2);
    });
  });
});
