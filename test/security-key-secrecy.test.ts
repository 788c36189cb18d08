import { createHash } from 'node:crypto';
import fc from 'fast-check';
import pg from 'pg';
import { context, propagation } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { ATTR, correlationIdFor } from '../src/entries/otel.js';
import { DATABASE_URL, databaseTargets } from './helpers/databases.js';
import { until } from './helpers/events.js';
import { postJson } from './helpers/http.js';
import { securityApp, securityTelemetry } from './helpers/security-app.js';

/** SECURITY.md's promise that a key never leaks: correlation IDs, telemetry, problems and NOTIFY payloads carry a hash of it at most (test/helpers/security-app.ts). */

const telemetry = securityTelemetry();
const { exporter, everythingRecorded } = telemetry;

describe('correlation IDs', () => {
  it('never collide across scope and key boundaries, and never contain the key', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.string({ minLength: 2 }), (scope, key) => {
        const shifted = correlationIdFor(scope + key[0], key.slice(1));
        expect(shifted).not.toBe(correlationIdFor(scope, key));
        expect(correlationIdFor(scope, key)).toMatch(/^[0-9a-f]{32}$/);
      }),
    );
  });
});

describe.each(databaseTargets())('on $name', (target) => {
  const security = securityApp(target, 'security_keys', telemetry);
  const { app } = security;

  describe('keys in telemetry and problems', () => {
    const secretKey = 'customer-4111111111111111-order-77';

    it('records only a hash of the key by default, on spans, events and baggage', async () => {
      let baggageSeen: string | undefined;
      const { server } = await app({
        handler: (ctx) => {
          baggageSeen = JSON.stringify(propagation.getBaggage(context.active())?.getAllEntries());
          ctx.status = 201;
          ctx.body = { ok: true };
        },
      });
      try {
        await postJson(`${server.url}/op`, { a: 1 }, { key: secretKey });
        await postJson(`${server.url}/op`, { a: 1 }, { key: secretKey }); // replay: a duplicate event
        await postJson(`${server.url}/op`, { a: 2 }, { key: secretKey }); // mismatch: another event
        const spans = exporter.getFinishedSpans();
        expect(spans.length).toBe(3);
        expect(spans[0]!.attributes[ATTR.KEY_HASH]).toMatch(/^[0-9a-f]{32}$/);
        expect(spans[0]!.attributes[ATTR.KEY]).toBeUndefined();
        expect(everythingRecorded()).not.toContain(secretKey);
        expect(baggageSeen).toBeDefined();
        expect(baggageSeen).not.toContain(secretKey);
      } finally {
        await server.close();
      }
    });

    it('records the raw key only when asked to', async () => {
      const { server } = await app({ telemetry: { recordRawKey: true }, handler: (ctx) => void (ctx.status = 204) });
      try {
        await postJson(`${server.url}/op`, {}, { key: secretKey });
        expect(exporter.getFinishedSpans()[0]!.attributes[ATTR.KEY]).toBe(secretKey);
      } finally {
        await server.close();
      }
    });

    it('never echoes the key in a problem response', async () => {
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let started!: () => void;
      const holding = new Promise<void>((resolve) => (started = resolve));
      const { server } = await app({
        handler: async (ctx) => {
          if ((ctx.request.body as { hold?: boolean }).hold) {
            started();
            await held;
          }
          ctx.status = 201;
        },
      });
      try {
        const running = postJson(`${server.url}/op`, { hold: true }, { key: `${secretKey}-1` });
        await Promise.race([holding, running]); // the duplicate comes while the first runs
        const conflict = await postJson(`${server.url}/op`, { hold: true }, { key: `${secretKey}-1` });
        release();
        await running;
        const mismatch = await postJson(`${server.url}/op`, { other: true }, { key: `${secretKey}-1` });
        const invalid = await postJson(`${server.url}/op`, {}, { key: `${secretKey} with space` });
        expect([conflict.status, mismatch.status, invalid.status]).toEqual([409, 422, 400]);
        for (const answer of [conflict, mismatch, invalid]) expect(answer.text).not.toContain(secretKey);
      } finally {
        await server.close();
      }
    });
  });
});

describe('NOTIFY payloads', () => {
  it('carry a hash, never the key or the scope, to every listener of the database, and only while someone waits', async () => {
    const db = await databaseTargets()[0]!.open('security_notify');
    const listener = new pg.Client({ connectionString: DATABASE_URL });
    try {
      const store = await db.store();
      const channel = `koa_idempotency_${createHash('sha256').update(`${db.schema}.idempotency_records`).digest('hex').slice(0, 16)}`;
      await listener.connect();
      const payloads: string[] = [];
      listener.on('notification', (message) => payloads.push(message.payload ?? ''));
      await listener.query(`LISTEN "${channel}"`);

      const request = (key: string) => ({ scope: 'tenant-secret', key, fingerprint: 'f', fingerprintVersion: 1, leaseMs: 10_000, ttlSeconds: 60 });
      // Nobody waits: the completion sends no notification (NOTIFY serialises every commit that sends one).
      const unwatched = await store.claim(request('key-unwatched'));
      if (unwatched.kind !== 'claimed') throw new Error('expected a claim');
      await store.complete(unwatched.lease, { replayable: false, status: 201 });

      const claim = await store.claim(request('key-secret'));
      if (claim.kind !== 'claimed') throw new Error('expected a claim');
      const watch = await store.watch('tenant-secret', 'key-secret');
      await store.complete(claim.lease, { replayable: false, status: 201 });
      expect(await watch.next(5_000)).toBe('changed');
      watch.close();
      await until(() => (payloads.length > 0 ? true : undefined), 'the notification payload', 1_000);

      expect(payloads).toHaveLength(1);
      expect(payloads[0]).toMatch(/^[0-9a-f]{32}$/);
    } finally {
      await listener.end();
      await db.close();
    }
  });
});
