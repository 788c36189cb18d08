import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { ATTR, EVENT, OUTCOME, correlationIdFor } from '../../src/entries/otel.js';
import { postJson } from '../helpers/http.js';
import { freePort } from '../../examples/shared/free-port.js';

/**
 * `npm start` as a user runs it, exporting to an OTLP/HTTP receiver this test starts: traces as
 * http/json, metrics as http/protobuf. The payload must hold, for an original request and its replay,
 * the same correlation ID on every span of both services, the outcome, the duplicate event and the link.
 */
const ACCOUNT = 'acct_otlp';
const KEY = `otlp-${Date.now()}`;
const CORRELATION_ID = correlationIdFor(ACCOUNT, KEY);
const START_TIMEOUT_MS = 120_000;
const SPAN_KIND_SERVER = 2;

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  name: string;
  kind: number;
  attributes: OtlpAttribute[];
  events?: { name: string; attributes?: OtlpAttribute[] }[];
  links?: { traceId: string; spanId: string; attributes?: OtlpAttribute[] }[];
}
interface ExportedSpan extends OtlpSpan {
  service: string;
}

function attribute(attributes: OtlpAttribute[] | undefined, key: string): string | number | boolean | undefined {
  const value = attributes?.find((candidate) => candidate.key === key)?.value;
  if (!value) return undefined;
  return value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : undefined) ?? value.doubleValue ?? value.boolValue;
}

/** An OTLP/HTTP receiver: keeps every trace payload (JSON) and metrics payload (raw protobuf). */
async function startReceiver() {
  const traces: unknown[] = [];
  const metrics: { contentType: string; body: Buffer }[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      if (request.url === '/v1/traces') traces.push(JSON.parse(body.toString('utf8')));
      if (request.url === '/v1/metrics') metrics.push({ contentType: String(request.headers['content-type']), body });
      const json = String(request.headers['content-type']).includes('json');
      response.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(json ? '{}' : '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const spans = (): ExportedSpan[] =>
    traces.flatMap((payload) =>
      (payload as { resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] }).resourceSpans.flatMap((resource) =>
        resource.scopeSpans.flatMap((scope) => scope.spans.map((span) => ({ ...span, service: String(attribute(resource.resource.attributes, 'service.name')) }))),
      ),
    );
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    traces,
    metrics,
    spans,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('npm start exporting to an OTLP/HTTP receiver', () => {
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let app: ChildProcess;
  let output = '';
  let baseUrl: string;
  let ports: { payments: number; ledger: number; paymentsMetrics: number; ledgerMetrics: number };
  let original: ExportedSpan[];
  let replay: ExportedSpan[];

  beforeAll(async () => {
    receiver = await startReceiver();
    const [payments, ledger, paymentsMetrics, ledgerMetrics] = [await freePort(), await freePort(), await freePort(), await freePort()];
    ports = { payments, ledger, paymentsMetrics, ledgerMetrics };
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PORT: String(ports.payments),
      DOWNSTREAM_PORT: String(ports.ledger),
      OTEL_EXPORTER_PROMETHEUS_PORT: String(ports.paymentsMetrics),
      DOWNSTREAM_PROMETHEUS_PORT: String(ports.ledgerMetrics),
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/protobuf',
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_METRIC_EXPORT_INTERVAL: '500',
    };
    delete env.DATABASE_URL; // the example starts a Postgres server of its own, as on a fresh clone
    delete env.PGLITE_DIR;
    app = spawn(process.execPath, ['--import', 'tsx', 'examples/payments/start.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    app.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    app.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await until('the payments API to listen', () => (output.includes('payments API listening') ? true : undefined), START_TIMEOUT_MS);
    baseUrl = `http://127.0.0.1:${ports.payments}`;

    const first = await postJson(`${baseUrl}/payments`, { amount: 4200, currency: 'EUR' }, { key: KEY, account: ACCOUNT });
    const second = await postJson(`${baseUrl}/payments`, { amount: 4200, currency: 'EUR' }, { key: KEY, account: ACCOUNT });
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(second.text).toBe(first.text);

    const serverSpanWith = (outcome: string) => () =>
      receiver.spans().find((span) => span.service === 'payments' && span.kind === SPAN_KIND_SERVER && attribute(span.attributes, ATTR.OUTCOME) === outcome);
    const executedSpan = await until('the original request in the export', serverSpanWith(OUTCOME.EXECUTED));
    const replayedSpan = await until('the replay in the export', serverSpanWith(OUTCOME.REPLAYED));
    // Spans of both traces may come in later exports than their server spans: wait for those the tests read.
    const ofTrace = (traceId: string) => receiver.spans().filter((span) => span.traceId === traceId);
    const ORIGINAL_SPANS = ['middleware - problemErrorsMiddleware', 'middleware - bearerAuth', 'POST /payments', 'POST /entries'];
    original = await until('the spans of the original request in the export', () => {
      const spans = ofTrace(executedSpan.traceId);
      const names = new Set(spans.map((span) => span.name));
      return ORIGINAL_SPANS.every((name) => names.has(name)) && spans.some((span) => span.service === 'ledger') ? spans : undefined;
    });
    replay = await until('the spans of the replay in the export', () => {
      const spans = ofTrace(replayedSpan.traceId);
      return spans.length >= 4 ? spans : undefined;
    });
  }, START_TIMEOUT_MS + 60_000);

  afterAll(async () => {
    if (app && app.exitCode === null) {
      const exited = new Promise((resolve) => app.once('exit', resolve));
      app.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
      if (app.exitCode === null) app.kill('SIGKILL');
    }
    await receiver?.close();
  });

  it('exports the original request from both services, every span with the correlation ID', () => {
    expect(new Set(original.map((span) => span.service))).toEqual(new Set(['payments', 'ledger']));
    expect(original.filter((span) => attribute(span.attributes, ATTR.CORRELATION_ID) !== CORRELATION_ID).map((span) => `${span.service}: ${span.name}`)).toEqual([]);
    // The Koa instrumentation patched the ESM app through the loader hook: outer middleware spans are there.
    expect(original.map((span) => span.name)).toEqual(
      expect.arrayContaining(['middleware - problemErrorsMiddleware', 'middleware - bearerAuth', 'POST /payments', 'POST /entries']),
    );
  });

  it('exports the replay with the same correlation ID on every span, its duplicate event and its link', () => {
    expect(replay.length).toBeGreaterThanOrEqual(4);
    expect(replay.filter((span) => attribute(span.attributes, ATTR.CORRELATION_ID) !== CORRELATION_ID).map((span) => span.name)).toEqual([]);
    const server = replay.find((span) => span.kind === SPAN_KIND_SERVER)!;
    const originalServer = original.find((span) => span.service === 'payments' && span.kind === SPAN_KIND_SERVER)!;
    const event = server.events?.find((candidate) => candidate.name === EVENT.DUPLICATE);
    expect(attribute(event?.attributes, ATTR.REASON)).toBe(OUTCOME.REPLAYED);
    expect(attribute(event?.attributes, ATTR.ORIGINAL_TRACE_ID)).toBe(originalServer.traceId);
    expect(server.links?.map((link) => [link.traceId, link.spanId])).toEqual([[originalServer.traceId, originalServer.spanId]]);

    if (process.env.OTLP_EXCERPT_FILE) {
      const excerpt = (span: ExportedSpan) => ({
        service: span.service,
        traceId: span.traceId,
        spanId: span.spanId,
        name: span.name,
        attributes: span.attributes.filter((a) => a.key.startsWith('idempotency.') || a.key.startsWith('http.')),
        events: span.events,
        links: span.links,
      });
      writeFileSync(process.env.OTLP_EXCERPT_FILE, JSON.stringify({ original: excerpt(originalServer), replay: excerpt(server) }, null, 2));
    }
  });

  it('pushes metrics as http/protobuf and serves them to Prometheus on both services', async () => {
    await until('a metrics export', () => (receiver.metrics.some((payload) => payload.body.includes('idempotency.requests')) ? true : undefined));
    expect(receiver.metrics[0]!.contentType).toBe('application/x-protobuf');
    for (const port of [ports.paymentsMetrics, ports.ledgerMetrics]) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toMatch(/idempotency_requests_total\{[^}]*idempotency_outcome="executed"[^}]*\} 1/);
    }
  });
});
