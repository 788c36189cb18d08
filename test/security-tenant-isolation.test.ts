import { beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp } from '../examples/payments/app.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { securityApp, securityTelemetry } from './helpers/security-app.js';

/** SECURITY.md's promise of tenant isolation: a key belongs to its principal (test/helpers/security-app.ts). */

const telemetry = securityTelemetry();

describe.each(databaseTargets())('on $name', (target) => {
  const security = securityApp(target, 'security_tenants', telemetry);
  let db: TestDatabase;
  beforeAll(() => {
    ({ db } = security);
  });

  describe('tenant isolation', () => {
    it('keeps the same key of two principals apart: each gets its own execution and only its own replay', async () => {
      const store = await db.store();
      const server = await serve(createPaymentsApp({ store, sql: db.sql, schema: db.schema }));
      try {
        const key = 'shared-key-between-tenants';
        const alice = await postJson(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key, account: 'alice' });
        const mallory = await postJson(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key, account: 'mallory' });
        expect(alice.status).toBe(201);
        expect(mallory.status).toBe(201);
        expect(mallory.headers.get('idempotent-replayed')).toBeNull();
        expect(JSON.parse(mallory.text).id).not.toBe(JSON.parse(alice.text).id);

        const malloryAgain = await postJson(`${server.url}/payments`, { amount: 100, currency: 'EUR' }, { key, account: 'mallory' });
        expect(malloryAgain.headers.get('idempotent-replayed')).toBe('true');
        expect(malloryAgain.text).toBe(mallory.text);
        const peek = await fetch(`${server.url}/payments/${JSON.parse(alice.text).id}`, { headers: { authorization: 'Bearer mallory' } });
        expect(peek.status).toBe(404);
      } finally {
        await server.close();
      }
    });

    it('does not confuse a scope and key pair with a shifted one, also when the replay cache answers', async () => {
      // The replay cache is on (its default): its key is the one place where scope and key are joined into one
      // string; the table keys on the pair. The completed record is replayed once, which puts it in the cache.
      const store = await db.store();
      const request = { fingerprint: 'f', fingerprintVersion: 1, leaseMs: 10_000, ttlSeconds: 60 };
      const first = await store.claim({ ...request, scope: 'shift-ab', key: 'c' });
      if (first.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(first.lease, { replayable: true, response: { status: 201, headers: {}, body: Buffer.from('ab+c') } });
      expect((await store.claim({ ...request, scope: 'shift-ab', key: 'c' })).kind).toBe('existing');

      expect((await store.claim({ ...request, scope: 'shift-a', key: 'bc' })).kind).toBe('claimed');
      expect((await store.claim({ ...request, scope: 'shift-', key: 'abc' })).kind).toBe('claimed');
    });
  });
});
