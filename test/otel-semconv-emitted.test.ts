import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SpanKind, type Attributes } from '@opentelemetry/api';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SDK_MAJOR } from './helpers/otel-sdk.js';
import { asUntracedClient, startTestTelemetry } from './telemetry-harness.js';
import { ATTR, METRIC } from '../src/entries/otel.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { postJson, serve } from './helpers/http.js';

/**
 * What the SDK's HTTP and Koa instrumentations really emit, read from a real SDK after real requests, against
 * what the dashboards read. SDK 3's contrib instrumentations emit only the stable HTTP semantic conventions
 * (test/unit/dashboards-semconv.test.ts checks the dashboards' text for the old names; this checks that the names it
 * forbids are indeed gone and that the labels the dashboards group by are on the series they query). SDK 2's
 * latest instrumentations (http 0.222+) emit the stable names too, so CI's SDK 2 leg runs this file as well.
 */
const telemetry = startTestTelemetry();
const { createPaymentsApp, paymentsSchemaSql } = await import('../examples/payments/app.js');

const DASHBOARDS = fileURLToPath(new URL('../dashboards/', import.meta.url));
const target = POSTGRES_SERVER;
/** The old HTTP conventions' names (instrumentation-http up to 0.221, SDK 2, emitted them by default). */
const LEGACY_HTTP_ATTRIBUTES = ['http.method', 'http.status_code', 'http.target', 'http.url', 'http.scheme', 'http.host', 'net.host.port'];
/** Labels Prometheus adds itself (the scrape job, a histogram's bucket bound), not metric attributes. */
const PROMETHEUS_LABELS = new Set(['job', 'le']);

/** The labels the dashboards aggregate by (`sum by (http_route)`), in all dashboards. */
function dashboardGroupingLabels(): string[] {
  const text = readdirSync(DASHBOARDS)
    .filter((name) => name.endsWith('.json'))
    .map((name) => readFileSync(`${DASHBOARDS}${name}`, 'utf8'))
    .join('\n');
  const labels = [...text.matchAll(/\bby \(([a-z_, ]+)\)/g)].flatMap((match) => match[1]!.split(',').map((label) => label.trim()));
  return [...new Set(labels)].filter((label) => !PROMETHEUS_LABELS.has(label)).sort();
}

const attributeNames = (attributes: Attributes[]): Set<string> => new Set(attributes.flatMap((entry) => Object.keys(entry)));

describe(`the HTTP semantic conventions OpenTelemetry SDK ${SDK_MAJOR}'s instrumentations emit`, () => {
  let database: TestDatabase;
  let app: Awaited<ReturnType<typeof serve>>;
  let serverSpans: ReadableSpan[];
  let metrics: ResourceMetrics;

  const pointsOf = (name: string): Attributes[] =>
    metrics.scopeMetrics
      .flatMap((scope) => scope.metrics)
      .filter((metric) => metric.descriptor.name === name)
      .flatMap((metric) => metric.dataPoints.map((point) => point.attributes));

  beforeAll(async () => {
    database = await target.open('semconv_emitted');
    for (const statement of paymentsSchemaSql(database.schema).split(';\n')) await database.sql.query(statement);
    app = await serve(createPaymentsApp({ store: await database.store(), sql: database.sql, schema: database.schema }));
    const key = `semconv-${Date.now()}`;
    // Untraced client, so the only HTTP spans are the server's (and the server metric is the only HTTP metric).
    const statuses = await asUntracedClient(async () => {
      const first = await postJson(`${app.url}/payments`, { amount: 100, currency: 'USD' }, { key, account: 'acct_semconv' });
      const replay = await postJson(`${app.url}/payments`, { amount: 100, currency: 'USD' }, { key, account: 'acct_semconv' });
      return [first.status, replay.status];
    });
    expect(statuses).toEqual([201, 201]);
    // The server span ends when the response has been written, after the client has read it.
    const deadline = Date.now() + 5_000;
    do {
      serverSpans = telemetry.exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.SERVER && span.attributes['url.path'] === '/payments');
      if (serverSpans.length >= 2) break;
      await new Promise((resolve) => setImmediate(resolve));
    } while (Date.now() < deadline);
    metrics = await telemetry.metricReader.read();
  });

  afterAll(async () => {
    await app?.close();
    await database?.close();
  });

  it('puts the stable HTTP attributes on the server spans and none of the old ones', () => {
    expect(serverSpans).toHaveLength(2);
    const names = attributeNames(serverSpans.map((span) => span.attributes));
    expect([...names].filter((name) => LEGACY_HTTP_ATTRIBUTES.includes(name))).toEqual([]);
    for (const span of serverSpans) {
      expect(span.attributes).toMatchObject({ 'http.request.method': 'POST', 'http.response.status_code': 201, 'url.path': '/payments' });
    }
  });

  it('records the stable http.server.request.duration (seconds), labelled with the stable names', () => {
    const points = pointsOf('http.server.request.duration');
    expect(points.length).toBeGreaterThan(0);
    expect(pointsOf('http.server.duration')).toEqual([]); // the old conventions' histogram, in milliseconds
    const names = attributeNames(points);
    expect([...names].filter((name) => LEGACY_HTTP_ATTRIBUTES.includes(name))).toEqual([]);
    expect(names.has('http.request.method') && names.has('http.response.status_code')).toBe(true);
  });

  it('carries every label the dashboards group by on the library series they query', () => {
    const labels = dashboardGroupingLabels();
    expect(labels).toContain('http_route');
    const emitted = new Set(
      [METRIC.REQUESTS, METRIC.REQUEST_DURATION, METRIC.STORE_OPERATION_DURATION].flatMap((name) =>
        [...attributeNames(pointsOf(name))].map((attribute) => attribute.replace(/[^a-zA-Z0-9_:]/g, '_')),
      ),
    );
    expect(labels.filter((label) => !emitted.has(label))).toEqual([]);
    expect(pointsOf(METRIC.REQUESTS).every((point) => point[ATTR.HTTP_ROUTE] === '/payments')).toBe(true);
  });
});
