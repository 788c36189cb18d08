import { beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp } from '../examples/payments/app.js';
import { problemType } from '../src/index.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { securityApp, securityTelemetry } from './helpers/security-app.js';

/** SECURITY.md's promise of bounded bodies: size caps on what is read and stored (test/helpers/security-app.ts). */

const telemetry = securityTelemetry();

describe.each(databaseTargets())('on $name', (target) => {
  const security = securityApp(target, 'security_caps', telemetry);
  const { app } = security;
  let db: TestDatabase;
  beforeAll(() => {
    ({ db } = security);
  });

  describe('size caps', () => {
    it('refuses a request body over the parser limit with a 413 problem, before any claim', async () => {
      const store = await db.store();
      const server = await serve(createPaymentsApp({ store, sql: db.sql, schema: db.schema }));
      try {
        const huge = { amount: 1, currency: 'EUR', pad: 'x'.repeat(100 * 1024) };
        const answer = await postJson(`${server.url}/payments`, huge, { key: 'huge-body', account: 'alice' });
        expect(answer.status).toBe(413);
        expect(answer.headers.get('content-type')).toBe('application/problem+json');
        expect(await store.find('alice', 'huge-body')).toBeUndefined();
      } finally {
        await server.close();
      }
    });

    it('stores no response over maxBodyBytes: a retry gets 409 not-replayable instead of a second execution', async () => {
      let executions = 0;
      const { store, server } = await app({
        maxBodyBytes: 1024,
        handler: (ctx) => {
          executions++;
          ctx.status = 201;
          ctx.body = 'y'.repeat(4096);
        },
      });
      try {
        expect((await postJson(`${server.url}/op`, {}, { key: 'big-response' })).text).toHaveLength(4096);
        const retry = await postJson(`${server.url}/op`, {}, { key: 'big-response' });
        expect(retry.status).toBe(409);
        expect(JSON.parse(retry.text).type).toBe(problemType('notReplayable'));
        expect(executions).toBe(1);
        expect((await store.find('', 'big-response'))?.response).toBeNull();
      } finally {
        await server.close();
      }
    });
  });
});
