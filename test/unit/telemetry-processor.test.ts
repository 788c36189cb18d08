import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { diag, propagation, ROOT_CONTEXT, trace, TraceFlags, type Context, type Span } from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { InMemorySpanExporter, type SpanProcessor, type TracerProvider } from '@opentelemetry/sdk-trace';
import { simpleSpanProcessor, tracerProvider } from '../helpers/otel-sdk.js';
import { ATTR, BAGGAGE_CORRELATION_ID, CorrelationSpanProcessor, idempotencyTracing } from '../../src/entries/otel.js';
import { IdempotencyConfigError } from '../../src/index.js';
import { requestSpanOf, stampActiveRequest } from '../../src/telemetry/span-stamping.js';

/**
 * The span processor on its own, with the real SDK (`@opentelemetry/sdk-trace`): which spans it stamps, when, and what it
 * forgets. Spans are started with explicit parent contexts, as instrumentations do.
 */
const ID = 'corr-0123456789abcdef';

describe('CorrelationSpanProcessor', () => {
  let exporter: InMemorySpanExporter;
  let processor: CorrelationSpanProcessor;
  let provider: TracerProvider;

  function setUp(options: ConstructorParameters<typeof CorrelationSpanProcessor>[0] = {}) {
    exporter = new InMemorySpanExporter();
    processor = new CorrelationSpanProcessor(options);
    // Typed as the SDK's interface: the structural implementation must satisfy sdk-trace 3.x (2.x in the SDK 2 leg).
    const spanProcessors: SpanProcessor[] = [processor, simpleSpanProcessor(exporter)];
    provider = tracerProvider({ spanProcessors });
  }

  beforeEach(() => setUp());
  afterEach(() => provider.shutdown());

  const start = (name: string, parent: Context = ROOT_CONTEXT): Span => provider.getTracer('test').startSpan(name, {}, parent);
  const under = (span: Span): Context => trace.setSpan(ROOT_CONTEXT, span);
  const stamped = () => Object.fromEntries(exporter.getFinishedSpans().map((span) => [span.name, span.attributes[ATTR.CORRELATION_ID]]));
  /** A context as an HTTP server sees it: a remote parent extracted from traceparent, maybe baggage. */
  function remote(baggage?: Record<string, string>): Context {
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: TraceFlags.SAMPLED, isRemote: true });
    if (!baggage) return parent;
    const entries = Object.fromEntries(Object.entries(baggage).map(([key, value]) => [key, { value }]));
    return propagation.setBaggage(parent, propagation.createBaggage(entries));
  }

  it('stamps the spans already open when the middleware learns the ID, and the spans started after', () => {
    const server = start('server', remote());
    const outer = start('outer middleware', under(server));
    const early = start('ended before the middleware', under(outer));
    early.end();
    const middleware = start('idempotency middleware', under(outer));

    stampActiveRequest(under(middleware), ID);
    const query = start('query', under(middleware));
    for (const span of [query, middleware, outer, server]) span.end();

    expect(stamped()).toEqual({
      'ended before the middleware': undefined, // ended spans are read-only: documented limit
      query: ID,
      'idempotency middleware': ID,
      'outer middleware': ID,
      server: ID,
    });
  });

  it('stamps a span started after the middleware returned, outside its baggage, from its request', () => {
    const server = start('server', remote());
    const middleware = start('idempotency middleware', under(server));
    stampActiveRequest(under(middleware), ID);
    middleware.end();
    start('response logger', under(server)).end();
    server.end();

    expect(stamped()['response logger']).toBe(ID);
  });

  it('stamps a span whose parent context carries the ID in baggage at start, as in a downstream service', async () => {
    // Inbound baggage is the caller's choice: the processor reads it only where the callers are trusted.
    await provider.shutdown();
    setUp({ trustInboundCorrelationId: true });
    const downstream = start('downstream server', remote({ [BAGGAGE_CORRELATION_ID]: ID }));
    start('downstream query', under(downstream)).end();
    downstream.end();

    expect(stamped()).toEqual({ 'downstream server': ID, 'downstream query': ID });
  });

  it('ignores a malformed ID in baggage (it would end up in every span)', () => {
    start('server', remote({ [BAGGAGE_CORRELATION_ID]: 'not an id; <script>' })).end();

    expect(stamped()).toEqual({ server: undefined });
  });

  it('keeps two requests of one trace apart (an upstream calling twice with different keys)', () => {
    const first = start('first server', remote());
    const second = start('second server', remote());
    stampActiveRequest(under(first), ID);
    second.end();
    first.end();

    expect(stamped()).toEqual({ 'first server': ID, 'second server': undefined });
  });

  it('gives the middleware the request span (the local root), and the active span once the root ended', () => {
    const server = start('server', remote());
    const middleware = start('idempotency middleware', under(server));

    expect(requestSpanOf(under(middleware))).toBe(server);
    server.end();
    expect(requestSpanOf(under(middleware))).toBe(middleware);
    middleware.end();
  });

  it('forgets the oldest request beyond maxTrackedRequests, so a span never ended cannot leak memory', async () => {
    await provider.shutdown();
    setUp({ maxTrackedRequests: 2 });
    const [oldest, middle, newest] = ['oldest', 'middle', 'newest'].map((name) => start(name, remote()));
    for (const span of [oldest!, middle!, newest!]) stampActiveRequest(under(span), ID);
    const lateChild = start('child of the forgotten request', under(oldest!));
    for (const span of [lateChild, oldest!, middle!, newest!]) span.end();

    // The oldest request was forgotten when the newest started: neither it nor its late child is stamped.
    expect(stamped()).toEqual({ oldest: undefined, middle: ID, newest: ID, 'child of the forgotten request': undefined });
  });

  it('rejects a bad maxTrackedRequests at construction', () => {
    expect(() => new CorrelationSpanProcessor({ maxTrackedRequests: 0 })).toThrow(IdempotencyConfigError);
  });

  it('stops stamping after shutdown', async () => {
    const server = start('server', remote());
    await processor.shutdown();
    stampActiveRequest(under(server), ID);
    server.end();

    expect(stamped()).toEqual({ server: undefined });
  });
});

describe('idempotencyTracing().checkPropagation()', () => {
  afterEach(() => {
    propagation.disable();
    vi.restoreAllMocks();
  });

  it('finds nothing missing with the W3C trace context and baggage propagators (the NodeSDK default)', async () => {
    propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
    const tracing = idempotencyTracing();

    expect(tracing.checkPropagation()).toEqual([]);
    await tracing.spanProcessor.shutdown();
  });

  it('reports, and warns through diag, a propagator that drops baggage', async () => {
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    const warn = vi.spyOn(diag, 'warn');
    const tracing = idempotencyTracing();

    expect(tracing.checkPropagation()).toEqual(['baggage']);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('OTEL_PROPAGATORS=tracecontext,baggage'));
    await tracing.spanProcessor.shutdown();
  });
});

describe('packaging', () => {
  it('imports no OpenTelemetry package but @opentelemetry/api anywhere in src/', () => {
    const src = fileURLToPath(new URL('../../src', import.meta.url));
    const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts'));
    const imports = files.flatMap((file) =>
      [...readFileSync(join(src, file), 'utf8').matchAll(/from '(@opentelemetry\/[^']+)'/g)].map((match) => `${file}: ${match[1]}`),
    );

    expect(imports.length).toBeGreaterThan(0);
    expect(imports.filter((line) => !line.endsWith(': @opentelemetry/api'))).toEqual([]);
  });
});
