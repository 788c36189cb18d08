import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DataPoint, Histogram, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { gate, startTestTelemetry } from './telemetry-harness.js';
import { ATTR, METRIC, OUTCOME } from '../src/entries/otel.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';
import { countWatches, until } from './helpers/events.js';

/**
 * The library's metrics, read back through a real MetricReader after real requests: the request counter
 * per outcome matches what was sent, durations are recorded, the in-flight gauge returns to zero, and no
 * label holds a key.
 */
const telemetry = startTestTelemetry();
const { createPaymentsApp, paymentsSchemaSql } = await import('../examples/payments/app.js');

// One database is enough here: the Postgres server.
const target = POSTGRES_SERVER;
const ACCOUNT = 'acct_metrics';
const PAYMENT = { amount: 500, currency: 'USD' };
/** How long the waiting duplicate is kept waiting, for its wait-duration histogram to show. */
const WAITED_MS = 150;

function points(metrics: ResourceMetrics, name: string): DataPoint<unknown>[] {
  return metrics.scopeMetrics
    .flatMap((scope) => scope.metrics)
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric) => metric.dataPoints as DataPoint<unknown>[]);
}

function sumBy(dataPoints: DataPoint<unknown>[], label: string): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const point of dataPoints) {
    const value = typeof point.value === 'number' ? point.value : (point.value as Histogram).count;
    const group = String(point.attributes[label]);
    sums[group] = (sums[group] ?? 0) + value;
  }
  return sums;
}

describe(`idempotency metrics on ${target.name}`, () => {
  let database: TestDatabase;
  const servers: Awaited<ReturnType<typeof serve>>[] = [];
  let held: ReturnType<typeof gate> | undefined;
  const keys: string[] = [];
  let metrics: ResourceMetrics;
  let watches: () => number = () => 0;

  const post = (url: string, key: string | undefined, body: unknown = PAYMENT) => {
    if (key) keys.push(key);
    return postJson(`${url}/payments`, body, { key, account: ACCOUNT }).then((response) => response.status);
  };

  /** Sends a first request held in its handler and a duplicate meanwhile; returns both statuses. */
  async function concurrentPair(url: string, key: string): Promise<number[]> {
    held = gate();
    const first = post(url, key);
    await held.reached;
    const watchesBefore = watches();
    let answered = false;
    const duplicate = post(url, key).finally(() => (answered = true));
    // The first completes once the duplicate has its answer (409) or, in 'wait' mode, waits on the record.
    await until(() => (answered || watches() > watchesBefore ? true : undefined), 'the duplicate answered or waiting');
    // A waiting duplicate waits a known while more: the histogram must measure it (its length is the case under test).
    if (!answered) await new Promise((resolve) => setTimeout(resolve, WAITED_MS));
    held.open();
    const statuses = await Promise.all([first, duplicate]);
    held = undefined;
    return statuses;
  }

  beforeAll(async () => {
    database = await target.open('telemetry_metrics');
    for (const statement of paymentsSchemaSql(database.schema).split(';\n')) await database.sql.query(statement);
    const store = await database.store();
    watches = countWatches(store);
    const base = { store, sql: database.sql, schema: database.schema };
    const afterInsert = () => held?.hold();
    const failInsert = () => {
      throw new Error('the payment provider is down');
    };
    const [api, rejecting, waiting, failing] = await Promise.all([
      serve(createPaymentsApp(base)),
      serve(createPaymentsApp({ ...base, afterInsert, idempotency: { transactional: false } })),
      serve(createPaymentsApp({ ...base, afterInsert, idempotency: { transactional: false, onInProgress: 'wait', waitMs: 10_000 } })),
      serve(createPaymentsApp({ ...base, afterInsert: failInsert })),
    ]);
    servers.push(api, rejecting, waiting, failing);
    const run = `${Date.now()}`;

    const statuses = [
      ...(await Promise.all([1, 2, 3].map((n) => post(api.url, `m-${run}-${n}`)))), // 3 executed
      await post(api.url, `m-${run}-1`), // replayed
      await post(api.url, `m-${run}-2`), // replayed
      await post(api.url, `m-${run}-3`, { ...PAYMENT, amount: 1 }), // key reused
      await post(api.url, undefined), // missing key
      await post(api.url, 'a,b'), // invalid key (two merged)
      ...(await concurrentPair(rejecting.url, `m-${run}-reject`)), // executed + in progress
      ...(await concurrentPair(waiting.url, `m-${run}-wait`)), // executed + replayed after waiting
      await post(failing.url, `m-${run}-throws`), // the handler throws: rolled back, released
    ];
    expect(statuses).toEqual([201, 201, 201, 201, 201, 422, 400, 400, 201, 409, 201, 201, 500]);
    metrics = await telemetry.metricReader.read();
  });

  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await database?.close();
  });

  it('counts requests per outcome as sent, on the route and method', () => {
    const requests = points(metrics, METRIC.REQUESTS);
    expect(sumBy(requests, ATTR.OUTCOME)).toEqual({
      [OUTCOME.EXECUTED]: 5,
      [OUTCOME.REPLAYED]: 3,
      [OUTCOME.KEY_REUSED]: 1,
      [OUTCOME.IN_PROGRESS]: 1,
      [OUTCOME.INVALID_KEY]: 2,
      [OUTCOME.RELEASED]: 1,
    });
    expect(sumBy(requests, ATTR.HTTP_ROUTE)).toEqual({ '/payments': 13 });
    expect(sumBy(requests, ATTR.HTTP_METHOD)).toEqual({ POST: 13 });
  });

  it('records a request duration for every request that held a key', () => {
    expect(sumBy(points(metrics, METRIC.REQUEST_DURATION), ATTR.OUTCOME)).toEqual({
      [OUTCOME.EXECUTED]: 5,
      [OUTCOME.REPLAYED]: 3,
      [OUTCOME.KEY_REUSED]: 1,
      [OUTCOME.IN_PROGRESS]: 1,
      [OUTCOME.RELEASED]: 1,
    });
  });

  it('records store operation durations by operation, in seconds', () => {
    const byOperation = sumBy(points(metrics, METRIC.STORE_OPERATION_DURATION), ATTR.OPERATION);
    // Some claims are answered from the replay cache without SQL, so at least the executed ones are timed.
    expect(byOperation.claim).toBeGreaterThanOrEqual(5);
    expect(byOperation.complete).toBeGreaterThanOrEqual(5);
    const descriptor = metrics.scopeMetrics.flatMap((scope) => scope.metrics).find((metric) => metric.descriptor.name === METRIC.STORE_OPERATION_DURATION)!.descriptor;
    expect(descriptor.unit).toBe('s');
  });

  it('records the wait of the duplicate that waited, with the outcome it got', () => {
    expect(sumBy(points(metrics, METRIC.WAIT_DURATION), ATTR.OUTCOME)).toEqual({ [OUTCOME.REPLAYED]: 1 });
    const [waited] = points(metrics, METRIC.WAIT_DURATION);
    expect((waited!.value as Histogram).sum).toBeGreaterThanOrEqual(WAITED_MS / 1_000); // it waited for the held first request
  });

  it('brings the in-flight gauge back to zero', () => {
    expect(Object.values(sumBy(points(metrics, METRIC.ACTIVE_REQUESTS), ATTR.HTTP_ROUTE))).toEqual([0]);
  });

  it('never puts a key in a label', () => {
    const labels = Object.values(METRIC)
      .flatMap((name) => points(metrics, name))
      .flatMap((point) => Object.values(point.attributes).map(String));
    expect(labels.filter((label) => keys.some((key) => label.includes(key)))).toEqual([]);
  });
});
