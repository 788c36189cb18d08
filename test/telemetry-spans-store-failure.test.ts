import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { SpanStatusCode } from '@opentelemetry/api';
import { SDK_MAJOR } from './helpers/otel-sdk.js';
import { asUntracedClient, newTrace, serverSpan, startTestTelemetry, waitForServerSpans } from './telemetry-harness.js';
import { PostgresStore, fromPgPool } from '../src/entries/postgres.js';
import { ATTR, OUTCOME, correlationIdFor } from '../src/entries/otel.js';
import { DATABASE_URL, databaseTargets, type TestDatabase } from './helpers/databases.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { postJson, serve } from './helpers/http.js';
import { ACCOUNT, PAYMENT, unstamped } from './helpers/correlation-spans.js';

/**
 * A store failure on the spans of a request: the exception recorded with ERROR status, every span still
 * stamped with the correlation ID. Real SDK, real instrumentations, real HTTP, real Postgres.
 */
const telemetry = startTestTelemetry();
const { createPaymentsApp, paymentsSchemaSql } = await import('../examples/payments/app.js');

describe('a store failure', () => {
  let pool: pg.Pool;
  let api: Awaited<ReturnType<typeof serve>>;

  beforeAll(async () => {
    // Nothing listens on port 1: every connection is refused, as when the database is down.
    pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', connectionTimeoutMillis: 2_000 });
    pool.on('error', () => undefined);
    const store = new PostgresStore({ pool, waitStrategy: 'poll' });
    api = await serve(createPaymentsApp({ store, sql: fromPgPool(pool) }));
  });

  afterAll(async () => {
    await api?.close();
    await pool?.end();
  });

  it('answers 503 and records the exception with ERROR status on the server span, every span stamped', async () => {
    const key = `down-${Date.now()}`;
    const trace = newTrace();
    const response = await asUntracedClient(() => postJson(`${api.url}/payments`, PAYMENT, { key, account: ACCOUNT, headers: trace.headers }));
    expect(response.status).toBe(503);
    const spans = await waitForServerSpans(telemetry.exporter, trace.traceId, ['/payments']);

    expect(unstamped(spans, correlationIdFor(ACCOUNT, key))).toEqual([]);
    const server = serverSpan(spans, '/payments')!;
    expect(server.attributes[ATTR.OUTCOME]).toBe(OUTCOME.STORE_UNAVAILABLE);
    expect(server.attributes[ATTR.STORE_ERROR_TYPE]).toBe('ECONNREFUSED');
    // SDK 3's HTTP instrumentation (stable HTTP conventions) sets error.type to the status code as the response ends.
    expect(server.attributes[ATTR.ERROR_TYPE]).toBe(SDK_MAJOR === 3 ? '503' : 'ECONNREFUSED');
    expect(server.status.code).toBe(SpanStatusCode.ERROR);
    const exception = server.events.find((event) => event.name === 'exception');
    expect(exception?.attributes?.['exception.message']).toMatch(/ECONNREFUSED/);
  });
});

describe('a store failure after the handler ran (Postgres server, through a TCP proxy)', () => {
  let database: TestDatabase;
  let proxy: TcpProxy;
  let pool: pg.Pool;
  let leaseApi: Awaited<ReturnType<typeof serve>>;
  let transactionalApi: Awaited<ReturnType<typeof serve>>;

  beforeAll(async () => {
    database = await databaseTargets()[0]!.open('telemetry_faults');
    for (const statement of paymentsSchemaSql(database.schema).split(';\n')) await database.sql.query(statement);
    await database.store(); // migrates the records table
    const target = new URL(DATABASE_URL);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    pool = new pg.Pool({ connectionString: proxy.urlFor(DATABASE_URL), max: 4, connectionTimeoutMillis: 2_000 });
    pool.on('error', () => undefined); // a client whose connection the proxy cut
    const base = { store: new PostgresStore({ pool, schema: database.schema, replayCacheEntries: 0 }), sql: fromPgPool(pool), schema: database.schema };
    leaseApi = await serve(createPaymentsApp({ ...base, idempotency: { transactional: false } }));
    transactionalApi = await serve(createPaymentsApp(base));
  });

  afterAll(async () => {
    await Promise.all([leaseApi?.close(), transactionalApi?.close()]);
    await pool?.end();
    await proxy?.close();
    await database?.close();
  });

  async function post(url: string, key: string) {
    const trace = newTrace();
    const response = await asUntracedClient(() => postJson(`${url}/payments`, PAYMENT, { key, account: ACCOUNT, headers: trace.headers }));
    const spans = await waitForServerSpans(telemetry.exporter, trace.traceId, ['/payments']);
    return { status: response.status, spans, server: serverSpan(spans, '/payments')! };
  }

  it('lease mode: the completion is lost for good, the 201 goes out, and the span records the exception with ERROR status', async () => {
    const key = `complete-lost-${Date.now()}`;
    proxy.reset();
    const cut = proxy.cutWhen("status = 'completed'", 'before');
    // Keep Postgres unreachable after the cut, so the middleware's completion retries fail too.
    void cut.then(() => proxy.refuse());
    const { status, spans, server } = await post(leaseApi.url, key);
    await cut;
    proxy.pass();

    expect(status).toBe(201);
    expect(server.status).toEqual({ code: SpanStatusCode.ERROR, message: 'idempotency store complete failed' });
    expect(server.events.filter((event) => event.name === 'exception')).toHaveLength(1);
    expect(unstamped(spans, correlationIdFor(ACCOUNT, key))).toEqual([]);
  });

  it('transactional mode: the COMMIT answer is lost, 503, and the span records the exception with ERROR status', async () => {
    const key = `commit-lost-${Date.now()}`;
    proxy.reset();
    const cut = proxy.cutWhen('COMMIT', 'after');
    const { status, spans, server } = await post(transactionalApi.url, key);
    await cut;

    expect(status).toBe(503);
    expect(server.attributes[ATTR.OUTCOME]).toBe(OUTCOME.STORE_UNAVAILABLE);
    expect(server.status.code).toBe(SpanStatusCode.ERROR);
    expect(server.events.filter((event) => event.name === 'exception')).toHaveLength(1);
    expect(unstamped(spans, correlationIdFor(ACCOUNT, key))).toEqual([]);
  });
});
