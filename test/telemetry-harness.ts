import { createRequire } from 'node:module';
import { afterAll, beforeEach } from 'vitest';
import { randomBytes } from 'node:crypto';
import { context, metrics, SpanKind, type Attributes } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import { InMemorySpanExporter, type ReadableSpan, type SpanProcessor } from '@opentelemetry/sdk-trace';
import { MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { KoaInstrumentation } from '@opentelemetry/instrumentation-koa';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { idempotencyTracing, type IdempotencyTracing } from '../src/entries/otel.js';
import { resetInstruments } from '../src/telemetry/metrics.js';
import { registerTracerProvider, simpleSpanProcessor } from './helpers/otel-sdk.js';

/**
 * A real OpenTelemetry SDK for the telemetry tests: the library's span processor first, then an
 * in-memory exporter; a metric reader read on demand; the HTTP, undici (fetch), Koa and pg
 * instrumentations, as an application registers them. One per test file (each file is its own process).
 */
export interface TestTelemetry {
  tracing: IdempotencyTracing;
  exporter: InMemorySpanExporter;
  metricReader: OnDemandMetricReader;
}

/** A metric reader that exports nothing: the test collects when it wants. */
export class OnDemandMetricReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}

  async read(): Promise<ResourceMetrics> {
    const { resourceMetrics, errors } = await this.collect();
    if (errors.length > 0) throw errors[0];
    return resourceMetrics;
  }
}

/**
 * A fresh MeterProvider before each test of the file (the library's instruments recreated on it), so a series
 * that exists was created by that test. Returns the current test's reader.
 */
export function freshMetricsPerTest(): () => OnDemandMetricReader {
  let reader: OnDemandMetricReader;
  beforeEach(() => {
    reader = new OnDemandMetricReader();
    metrics.disable();
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    resetInstruments();
  });
  afterAll(() => {
    metrics.disable();
    resetInstruments();
  });
  return () => reader;
}

/** The spans started and not yet ended, by trace ID: a trace is whole once none of its spans is open. */
const openSpans = new Map<string, Set<string>>();

const openSpanTracker: SpanProcessor = {
  onStart(span) {
    const { traceId, spanId } = span.spanContext();
    const open = openSpans.get(traceId) ?? new Set<string>();
    openSpans.set(traceId, open.add(spanId));
  },
  onEnd(span) {
    const { traceId, spanId } = span.spanContext();
    const open = openSpans.get(traceId);
    open?.delete(spanId);
    if (open?.size === 0) openSpans.delete(traceId);
  },
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};

export function startTestTelemetry(): TestTelemetry {
  const tracing = idempotencyTracing();
  const exporter = new InMemorySpanExporter();
  // Typed as the SDK's SpanProcessor: proves the structural implementation fits sdk-trace 3.x (the SDK 2 leg runs it on 2.x).
  const spanProcessors: SpanProcessor[] = [tracing.spanProcessor, simpleSpanProcessor(exporter), openSpanTracker];
  registerTracerProvider({ spanProcessors });
  const metricReader = new OnDemandMetricReader();
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [metricReader] }));
  registerInstrumentations({
    instrumentations: [new HttpInstrumentation(), new UndiciInstrumentation(), new KoaInstrumentation(), new PgInstrumentation()],
  });
  // Vitest loads node_modules outside the ESM loader hooks, so patch through require: Koa's and pg's
  // classes are the same objects for the ESM importers, and the instrumentations patch their prototypes.
  const require = createRequire(import.meta.url);
  for (const name of ['koa', 'pg', 'pg-pool']) require(name);
  return { tracing, exporter, metricReader };
}

/** A fresh W3C trace per request, so a test can pick out exactly the spans of one request. */
export function newTrace(): { traceId: string; headers: { traceparent: string } } {
  const traceId = randomBytes(16).toString('hex');
  return { traceId, headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` } };
}

/**
 * Runs the test's own client calls untraced: otherwise the fetch instrumentation would start a trace of
 * its own and replace the test's traceparent header.
 */
export function asUntracedClient<T>(fn: () => Promise<T>): Promise<T> {
  return context.with(suppressTracing(context.active()), fn);
}

export function spansOfTrace(exporter: InMemorySpanExporter, traceId: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === traceId);
}

/** The server spans of a trace, by URL path. */
export function serverSpan(spans: ReadableSpan[], path: string): ReadableSpan | undefined {
  return spans.find((span) => span.kind === SpanKind.SERVER && span.attributes['url.path'] === path);
}

/**
 * Waits until the trace's server spans for `paths` have ended, and every other span of the trace started so
 * far: a server span ends when the response finishes, which can be a moment after the client has read it,
 * and spans of the same response may end after it.
 */
export async function waitForServerSpans(exporter: InMemorySpanExporter, traceId: string, paths: string[], timeoutMs = 5_000): Promise<ReadableSpan[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const spans = spansOfTrace(exporter, traceId);
    if (paths.every((path) => serverSpan(spans, path)) && !openSpans.has(traceId)) return spans;
    if (Date.now() > deadline) {
      const seen = spans.map((span) => `${span.name} [${SpanKind[span.kind]}]`).join(', ');
      const open = openSpans.get(traceId)?.size ?? 0;
      throw new Error(`trace ${traceId}: no server span for ${paths.join(', ')}, or ${open} spans still open, after ${timeoutMs} ms; ended: ${seen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Every attribute value of every span and event, as strings: for "this value never appears" checks. */
export function allAttributeValues(spans: ReadableSpan[]): string[] {
  const values = (attributes: Attributes) => Object.values(attributes).map(String);
  return spans.flatMap((span) => [...values(span.attributes), ...span.events.flatMap((event) => values(event.attributes ?? {}))]);
}

/** A gate the test opens: holds the first request inside its handler so a duplicate can arrive meanwhile. */
export function gate() {
  let open!: () => void;
  let entered!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  const reached = new Promise<void>((resolve) => (entered = resolve));
  return { open, reached, hold: async () => (entered(), opened) };
}
