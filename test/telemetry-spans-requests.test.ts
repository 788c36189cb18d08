import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { allAttributeValues, asUntracedClient, gate, newTrace, serverSpan, startTestTelemetry, waitForServerSpans } from './telemetry-harness.js';
import { ATTR, BAGGAGE_CORRELATION_ID, EVENT, MODE, OUTCOME, correlationIdFor } from '../src/entries/otel.js';
import { databaseTargets, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { ACCOUNT, PAYMENT, unstamped } from './helpers/correlation-spans.js';

/**
 * Every span of a request carries the correlation ID: the HTTP server span, the Koa middleware spans
 * that started before the idempotency middleware, the database and outgoing HTTP spans, and the spans
 * of the downstream ledger service, which gets the ID through W3C baggage; its replay, a mismatched reuse
 * of its key and a duplicate too. Real SDK, real instrumentations, real HTTP, real Postgres (server and PGlite).
 */
const telemetry = startTestTelemetry();
const { createPaymentsApp, paymentsSchemaSql } = await import('../examples/payments/app.js');
const { createLedgerApp, ledgerSchemaSql } = await import('../examples/ledger/app.js');

function sha256Prefix(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 32);
}

function duplicateEvents(span: ReadableSpan | undefined) {
  return (span?.events ?? []).filter((event) => event.name === EVENT.DUPLICATE);
}

/** The ledger behind a plain HTTP server that records the baggage header each request carried. */
async function serveLedger(database: TestDatabase) {
  const app = createLedgerApp({ store: await database.store({ table: 'ledger_records' }), sql: database.sql, schema: database.schema });
  const baggage: string[] = [];
  const handle = app.callback();
  const server: Server = createServer((request, response) => {
    baggage.push(String(request.headers.baggage ?? ''));
    void handle(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, baggage, close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) };
}

describe.each(databaseTargets())('request telemetry on $name', (target) => {
  let payments: TestDatabase;
  let ledgerDb: TestDatabase;
  let ledger: Awaited<ReturnType<typeof serveLedger>>;
  let api: Awaited<ReturnType<typeof serve>>;
  let leaseApi: Awaited<ReturnType<typeof serve>>;
  let rawApi: Awaited<ReturnType<typeof serve>>;
  let gatedTransactionalApi: Awaited<ReturnType<typeof serve>>;
  let held: ReturnType<typeof gate> | undefined;

  beforeAll(async () => {
    // The ledger gets its own database: on PGlite (one connection) two services' transactions would queue on each other.
    [payments, ledgerDb] = await Promise.all([target.open('telemetry_spans'), target.open('telemetry_ledger')]);
    for (const statement of paymentsSchemaSql(payments.schema).split(';\n')) await payments.sql.query(statement);
    for (const statement of ledgerSchemaSql(ledgerDb.schema).split(';\n')) await ledgerDb.sql.query(statement);
    ledger = await serveLedger(ledgerDb);
    const store = await payments.store();
    const base = { store, sql: payments.sql, schema: payments.schema };
    api = await serve(createPaymentsApp({ ...base, ledgerUrl: ledger.url }));
    // Lease mode lets a duplicate see the first request's in-progress record on both databases.
    leaseApi = await serve(createPaymentsApp({ ...base, idempotency: { transactional: false }, afterInsert: () => held?.hold() }));
    rawApi = await serve(createPaymentsApp({ ...base, ledgerUrl: ledger.url, idempotency: { telemetry: { recordRawKey: true, recordScope: true } } }));
    gatedTransactionalApi = await serve(createPaymentsApp({ ...base, afterInsert: () => held?.hold() }));
  });

  afterAll(async () => {
    await Promise.all([api?.close(), leaseApi?.close(), rawApi?.close(), gatedTransactionalApi?.close(), ledger?.close()]);
    await Promise.all([payments?.close(), ledgerDb?.close()]);
  });

  async function post(url: string, key: string, body: unknown = PAYMENT) {
    const trace = newTrace();
    const response = await asUntracedClient(() => postJson(`${url}/payments`, body, { key, account: ACCOUNT, headers: trace.headers }));
    return { ...trace, status: response.status };
  }

  describe('an executed request, then its replay and a mismatched reuse of the key', () => {
    const key = `order-${Date.now()}-secret-key-value`;
    const correlationId = correlationIdFor(ACCOUNT, key);
    let executed: { traceId: string; spans: ReadableSpan[]; sentAtMs: number; answeredAtMs: number };

    it('stamps the correlation ID on every span of both services, server and outer middleware spans included', async () => {
      const sentAtMs = Date.now();
      const request = await post(api.url, key);
      const answeredAtMs = Date.now();
      expect(request.status).toBe(201);
      const spans = await waitForServerSpans(telemetry.exporter, request.traceId, ['/payments', '/entries']);
      executed = { traceId: request.traceId, spans, sentAtMs, answeredAtMs };

      expect(unstamped(spans, correlationId)).toEqual([]);
      const names = spans.map((span) => span.name);
      expect(names).toContain('middleware - problemErrorsMiddleware'); // an outer middleware, started before ours
      expect(names).toContain('middleware - bodyParser');
      expect(spans.filter((span) => span.kind === SpanKind.SERVER)).toHaveLength(2); // payments and ledger
      expect(spans.some((span) => span.kind === SpanKind.CLIENT && span.attributes['url.path'] === '/entries')).toBe(true); // fetch
      if (target.name === 'Postgres server') expect(spans.filter((span) => span.name.startsWith('pg.query')).length).toBeGreaterThanOrEqual(8);
    });

    it('puts the outcome, the mode and the key hash on the server spans, never the raw key or the scope', () => {
      const server = serverSpan(executed.spans, '/payments')!;
      expect(server.attributes).toMatchObject({ [ATTR.OUTCOME]: OUTCOME.EXECUTED, [ATTR.MODE]: MODE.TRANSACTIONAL, [ATTR.KEY_HASH]: sha256Prefix(key) });
      expect(server.attributes[ATTR.NOT_REPLAYABLE_REASON]).toBeUndefined();
      expect(server.attributes[ATTR.KEY]).toBeUndefined();
      expect(server.attributes[ATTR.SCOPE]).toBeUndefined();
      expect(serverSpan(executed.spans, '/entries')!.attributes[ATTR.OUTCOME]).toBe(OUTCOME.EXECUTED);
      const values = allAttributeValues(executed.spans);
      expect(values.filter((value) => value.includes(key))).toEqual([]);
      expect(values.filter((value) => value.includes(ACCOUNT))).toEqual([]);
    });

    it('hands the correlation ID to the ledger in baggage, the only entry it adds, and the ledger keeps it', () => {
      const sent = ledger.baggage.at(-1)!;
      expect(sent).toBe(`${BAGGAGE_CORRELATION_ID}=${correlationId}`);
      // The ledger's own key is derived, so its own ID would differ: the shared one came from baggage.
      const ledgerServer = serverSpan(executed.spans, '/entries')!;
      expect(ledgerServer.attributes[ATTR.KEY_HASH]).not.toBe(sha256Prefix(key));
      expect(ledgerServer.attributes[ATTR.CORRELATION_ID]).toBe(correlationId);
    });

    it('replays with the same ID on every span, a duplicate event naming the original trace, and a link to it', async () => {
      const replaySentAtMs = Date.now();
      const request = await post(api.url, key);
      expect(request.status).toBe(201);
      const spans = await waitForServerSpans(telemetry.exporter, request.traceId, ['/payments']);

      expect(unstamped(spans, correlationId)).toEqual([]);
      expect(spans.map((span) => span.name)).toContain('middleware - problemErrorsMiddleware');
      expect(serverSpan(spans, '/entries')).toBeUndefined(); // a replay does not call the ledger again
      const server = serverSpan(spans, '/payments')!;
      expect(server.attributes[ATTR.OUTCOME]).toBe(OUTCOME.REPLAYED);
      // The record's age (seconds) lies between what the clock saw around the original and the replay.
      const ageSeconds = server.attributes[ATTR.RECORD_AGE] as number;
      expect(ageSeconds).toBeGreaterThanOrEqual((replaySentAtMs - executed.answeredAtMs) / 1000 - 0.001);
      expect(ageSeconds).toBeLessThanOrEqual((Date.now() - executed.sentAtMs) / 1000 + 0.001);
      expect(duplicateEvents(server).map((event) => event.attributes)).toEqual([
        { [ATTR.REASON]: OUTCOME.REPLAYED, [ATTR.RECORD_AGE]: expect.any(Number), [ATTR.ORIGINAL_TRACE_ID]: executed.traceId },
      ]);
      const original = serverSpan(executed.spans, '/payments')!.spanContext();
      expect(server.links.map((link) => [link.context.traceId, link.context.spanId, link.attributes])).toEqual([
        [original.traceId, original.spanId, { [ATTR.REASON]: OUTCOME.REPLAYED }],
      ]);
    });

    it('answers a reuse with another body with 422, the ID on every span and a mismatch event', async () => {
      const request = await post(api.url, key, { ...PAYMENT, amount: 99 });
      expect(request.status).toBe(422);
      const spans = await waitForServerSpans(telemetry.exporter, request.traceId, ['/payments']);

      expect(unstamped(spans, correlationId)).toEqual([]);
      const server = serverSpan(spans, '/payments')!;
      expect(server.attributes[ATTR.OUTCOME]).toBe(OUTCOME.KEY_REUSED);
      expect(duplicateEvents(server).map((event) => [event.attributes?.[ATTR.REASON], event.attributes?.[ATTR.ORIGINAL_TRACE_ID]])).toEqual([
        [OUTCOME.KEY_REUSED, executed.traceId],
      ]);
      expect(server.links).toEqual([]);
    });
  });

  describe('a duplicate that arrives while the first request runs', () => {
    it('answers 409 with the ID on every span of both requests and a conflict event', async () => {
      const key = `conflict-${Date.now()}`;
      const correlationId = correlationIdFor(ACCOUNT, key);
      held = gate();
      const first = post(leaseApi.url, key);
      await held.reached;
      const duplicate = await post(leaseApi.url, key);
      held.open();
      const original = await first;
      held = undefined;

      expect([original.status, duplicate.status]).toEqual([201, 409]);
      const duplicateSpans = await waitForServerSpans(telemetry.exporter, duplicate.traceId, ['/payments']);
      const originalSpans = await waitForServerSpans(telemetry.exporter, original.traceId, ['/payments']);
      expect(unstamped(duplicateSpans, correlationId)).toEqual([]);
      expect(unstamped(originalSpans, correlationId)).toEqual([]);
      const server = serverSpan(duplicateSpans, '/payments')!;
      expect(server.attributes[ATTR.OUTCOME]).toBe(OUTCOME.IN_PROGRESS);
      expect(server.attributes[ATTR.MODE]).toBe(MODE.LEASE);
      expect(duplicateEvents(server).map((event) => [event.attributes?.[ATTR.REASON], event.attributes?.[ATTR.ORIGINAL_TRACE_ID]])).toEqual([
        [OUTCOME.IN_PROGRESS, original.traceId],
      ]);
    });
  });

  // On PGlite (one connection) the duplicate's transaction would queue behind the first one's.
  const oneConnection = target.name === 'PGlite';
  describe.skipIf(oneConnection)(
    `a duplicate while the first transaction is open${oneConnection ? ' (skipped on PGlite: one connection, a second transaction waits for the first by design)' : ''}`,
    () => {
      it('answers 409 (busy: the record is not visible yet) with the ID on every span and a conflict event', async () => {
        const key = `busy-${Date.now()}`;
        held = gate();
        const first = post(gatedTransactionalApi.url, key);
        await held.reached;
        const duplicate = await post(gatedTransactionalApi.url, key);
        held.open();
        const original = await first;
        held = undefined;

        expect([original.status, duplicate.status]).toEqual([201, 409]);
        const spans = await waitForServerSpans(telemetry.exporter, duplicate.traceId, ['/payments']);
        expect(unstamped(spans, correlationIdFor(ACCOUNT, key))).toEqual([]);
        const server = serverSpan(spans, '/payments')!;
        expect(server.attributes[ATTR.OUTCOME]).toBe(OUTCOME.IN_PROGRESS);
        expect(duplicateEvents(server).map((event) => event.attributes)).toEqual([{ [ATTR.REASON]: OUTCOME.IN_PROGRESS }]);
      });
    },
  );

  describe('raw key and scope, when configured', () => {
    it('go on the server span only, never into the baggage sent downstream', async () => {
      const key = `raw-${Date.now()}`;
      const request = await post(rawApi.url, key);
      expect(request.status).toBe(201);
      const spans = await waitForServerSpans(telemetry.exporter, request.traceId, ['/payments', '/entries']);

      expect(serverSpan(spans, '/payments')!.attributes).toMatchObject({ [ATTR.KEY]: key, [ATTR.SCOPE]: ACCOUNT });
      expect(ledger.baggage.at(-1)).toBe(`${BAGGAGE_CORRELATION_ID}=${correlationIdFor(ACCOUNT, key)}`);
      expect(unstamped(spans, correlationIdFor(ACCOUNT, key))).toEqual([]);
    });
  });
});
