import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asUntracedClient, newTrace, serverSpan, startTestTelemetry, waitForServerSpans } from './telemetry-harness.js';
import { FINGERPRINT_VERSION, fingerprint } from '../src/index.js';
import { type PostgresStore } from '../src/entries/postgres.js';
import { ATTR, correlationIdFor, EVENT, OUTCOME } from '../src/entries/otel.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { leaseLapsed } from './helpers/record-clock.js';

/**
 * A takeover as the on-call engineer sees it: a worker claimed a key and died (its lease lapses); the
 * client's retry takes the record over, and its server span says so.
 */
const telemetry = startTestTelemetry();
// Koa and the HTTP helper load after the instrumentations are registered, so their modules are patched.
const { createTestApp } = await import('./helpers/app.js');
const { serve } = await import('./helpers/http.js');
const target = POSTGRES_SERVER;

describe(`takeover telemetry on ${target.name}`, () => {
  let database: TestDatabase;
  let store: PostgresStore;
  let server: Awaited<ReturnType<typeof serve>>;

  beforeAll(async () => {
    database = await target.open('telemetry_takeover');
    store = await database.store();
    server = await serve(createTestApp({ store }).app);
  });
  afterAll(async () => {
    await server?.close();
    await database?.close();
  });

  it('marks the retry that takes over a dead worker’s record with the outcome, the event and the attempt', async () => {
    const key = `takeover-${Date.now()}`;
    const body = '{"amount":5}';
    // The "dead worker": a claim for the very same request whose lease runs out and is never renewed.
    await store.claim({
      scope: 'acct',
      key,
      fingerprint: fingerprint({ method: 'POST', path: '/orders', querystring: '', headers: {}, body: { amount: 5 }, mediaType: 'application/json' }),
      fingerprintVersion: FINGERPRINT_VERSION,
      leaseMs: 100,
      ttlSeconds: 60,
    });
    await leaseLapsed(database.sql, `"${database.schema}".idempotency_records`, key);

    const trace = newTrace();
    const response = await asUntracedClient(() =>
      fetch(`${server.url}/orders`, {
        method: 'POST',
        headers: { ...trace.headers, 'idempotency-key': key, 'x-account': 'acct', 'content-type': 'application/json' },
        body,
      }),
    );
    expect(response.status).toBe(201);

    const span = serverSpan(await waitForServerSpans(telemetry.exporter, trace.traceId, ['/orders']), '/orders')!;
    expect(span.attributes[ATTR.OUTCOME]).toBe(OUTCOME.TAKEOVER);
    expect(span.attributes[ATTR.CORRELATION_ID]).toBe(correlationIdFor('acct', key));
    const takeover = span.events.find((event) => event.name === EVENT.TAKEOVER);
    expect(takeover?.attributes?.[ATTR.ATTEMPT]).toBe(2);
  });
});
