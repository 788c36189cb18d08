import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { context, propagation, ROOT_CONTEXT, trace, TraceFlags, type Context, type Span } from '@opentelemetry/api';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace';
import { tracerProvider } from '../helpers/otel-sdk.js';
import { allAttributeValues, asUntracedClient, newTrace, serverSpan, spansOfTrace, startTestTelemetry, waitForServerSpans } from '../telemetry-harness.js';
import { type IdempotencyRecord } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { ATTR, BAGGAGE_CORRELATION_ID, CorrelationSpanProcessor, correlationIdFor, OUTCOME } from '../../src/entries/otel.js';
import { withCorrelationBaggage } from '../../src/telemetry/correlation.js';
import { RequestTelemetry } from '../../src/middleware/request-telemetry.js';
import { stampActiveRequest } from '../../src/telemetry/span-stamping.js';
import { formatTraceparent, parseTraceparent } from '../../src/telemetry/traceparent.js';
import { POSTGRES_SERVER, type TestDatabase } from '../helpers/databases.js';

/**
 * Regression tests for the telemetry defects of issue 14: a client choosing its correlation ID through
 * baggage (7), the span processor's memory under a long-lived root span (10), and trace flags of 0x10 or
 * more losing the replay's span link (11).
 */
const telemetry = startTestTelemetry();
// Koa and the HTTP helper load after the instrumentations are registered, so their modules are patched.
const { default: Koa } = await import('koa');
const { bodyParser } = await import('@koa/bodyparser');
const { idempotency } = await import('../../src/index.js');
const { serve } = await import('../helpers/http.js');
const target = POSTGRES_SERVER;

/** A well-formed ID a client chose itself: the shape upstreamCorrelationId() accepts. */
const FORGED_ID = 'client-chosen-0123456789';
const ID = 'corr-0123456789abcdef';
const SCOPE = 'acct_hardening';
const LABELS = { route: '/orders', method: 'POST' };
const TELEMETRY_OPTIONS = { recordRawKey: false, recordScope: false };

/** A provider of its own with a CorrelationSpanProcessor, recording the ended spans the test names. */
function processorUnderTest(options: ConstructorParameters<typeof CorrelationSpanProcessor>[0] = {}) {
  const processor = new CorrelationSpanProcessor(options);
  const ended = new Map<string, ReadableSpan>();
  // Keeps only the spans a test names: 100,000 exported children would make the memory test measure the exporter.
  const recorder: SpanProcessor = {
    onStart: () => undefined,
    onEnd: (span) => void (span.name === 'child' || ended.set(span.name, span)),
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
  const provider = tracerProvider({ spanProcessors: [processor, recorder] });
  const tracer = provider.getTracer('hardening');
  const start = (name: string, parent: Context = ROOT_CONTEXT): Span => tracer.startSpan(name, {}, parent);
  const stamped = (name: string) => ended.get(name)?.attributes[ATTR.CORRELATION_ID];
  return { processor, provider, start, stamped };
}

const under = (span: Span, parent: Context = ROOT_CONTEXT): Context => trace.setSpan(parent, span);

/** A context as an HTTP server sees a client's request: a remote parent and the client's baggage. */
function fromClient(baggage: Record<string, string>): Context {
  const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: TraceFlags.SAMPLED, isRemote: true });
  const entries = Object.fromEntries(Object.entries(baggage).map(([key, value]) => [key, { value }]));
  return propagation.setBaggage(parent, propagation.createBaggage(entries));
}

describe('a client cannot set the correlation ID through inbound baggage', () => {
  let database: TestDatabase;
  let store: PostgresStore;

  beforeAll(async () => {
    database = await target.open('telemetry_hardening');
    store = await database.store();
  });
  afterAll(() => database?.close());

  /**
   * An app whose outer middleware starts a span before and after the idempotency middleware, and whose
   * handler reports `ctx.idempotency.correlationId` and the baggage it would forward downstream.
   */
  async function serveApp(trustInboundCorrelationId: boolean | undefined) {
    const tracer = trace.getTracer('hardening-app');
    const seen: Array<{ correlationId: string | undefined; forwardedBaggage: string | undefined }> = [];
    const app = new Koa();
    app.use(async (_ctx, next) => {
      tracer.startSpan('before the middleware').end();
      await next();
      tracer.startSpan('after the middleware').end();
    });
    app.use(bodyParser({ enableTypes: ['json'] }));
    // Built apart from the call (not a fresh literal), so it type-checks before and after the option joins TelemetryOptions.
    const telemetryOptions = { recordRawKey: false, ...(trustInboundCorrelationId === undefined ? {} : { trustInboundCorrelationId }) };
    app.use(idempotency({ store, scope: () => SCOPE, telemetry: telemetryOptions }));
    app.use((ctx) => {
      const carrier: Record<string, string> = {};
      propagation.inject(context.active(), carrier);
      seen.push({ correlationId: ctx.idempotency?.correlationId, forwardedBaggage: carrier.baggage });
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    app.silent = true;
    return { server: await serve(app), seen };
  }

  async function postWithBaggage(url: string, key: string) {
    const request = newTrace();
    const response = await asUntracedClient(() =>
      fetch(`${url}/orders`, {
        method: 'POST',
        headers: { ...request.headers, baggage: `${BAGGAGE_CORRELATION_ID}=${FORGED_ID}`, 'idempotency-key': key, 'content-type': 'application/json' },
        body: '{"amount":1}',
      }),
    );
    expect(response.status).toBe(201);
    return waitForServerSpans(telemetry.exporter, request.traceId, ['/orders']);
  }

  it('ignores a client’s correlation ID in baggage by default: spans, record, forwarded baggage and ctx carry the computed ID', async () => {
    const { server, seen } = await serveApp(undefined);
    try {
      const key = `forged-${Date.now()}`;
      const computed = correlationIdFor(SCOPE, key);
      const spans = await postWithBaggage(server.url, key);

      expect(serverSpan(spans, '/orders')?.attributes[ATTR.CORRELATION_ID]).toBe(computed);
      expect(spans.find((span) => span.name === 'after the middleware')?.attributes[ATTR.CORRELATION_ID]).toBe(computed);
      expect(allAttributeValues(spans).filter((value) => value === FORGED_ID)).toEqual([]);
      expect((await store.find(SCOPE, key))?.correlationId).toBe(computed);
      expect(seen).toEqual([{ correlationId: computed, forwardedBaggage: `${BAGGAGE_CORRELATION_ID}=${computed}` }]);
    } finally {
      await server.close();
    }
  });

  it('adopts the upstream correlation ID from baggage with telemetry.trustInboundCorrelationId, everywhere the ID goes', async () => {
    const { server, seen } = await serveApp(true);
    try {
      const key = `trusted-${Date.now()}`;
      const spans = await postWithBaggage(server.url, key);

      expect(serverSpan(spans, '/orders')?.attributes[ATTR.CORRELATION_ID]).toBe(FORGED_ID);
      expect(spans.find((span) => span.name === 'after the middleware')?.attributes[ATTR.CORRELATION_ID]).toBe(FORGED_ID);
      expect((await store.find(SCOPE, key))?.correlationId).toBe(FORGED_ID);
      expect(seen).toEqual([{ correlationId: FORGED_ID, forwardedBaggage: `${BAGGAGE_CORRELATION_ID}=${FORGED_ID}` }]);
    } finally {
      await server.close();
    }
  });

  it('removes a client’s correlation ID from the baggage an unkeyed request forwards downstream, unless trusted', async () => {
    const forwarded = async (trustInboundCorrelationId: boolean | undefined) => {
      const { server, seen } = await serveApp(trustInboundCorrelationId);
      try {
        const baggage = `${BAGGAGE_CORRELATION_ID}=${FORGED_ID},tenant=t-1`;
        for (const method of ['GET', 'POST']) {
          // A GET the middleware does not apply to, a POST without a key where none is required.
          const response = await asUntracedClient(() => fetch(`${server.url}/orders`, { method, headers: { ...newTrace().headers, baggage } }));
          expect(response.status).toBe(201);
        }
        return seen.map((request) => request.forwardedBaggage);
      } finally {
        await server.close();
      }
    };
    expect(await forwarded(undefined)).toEqual(['tenant=t-1', 'tenant=t-1']);
    expect(await forwarded(true)).toEqual([`${BAGGAGE_CORRELATION_ID}=${FORGED_ID},tenant=t-1`, `${BAGGAGE_CORRELATION_ID}=${FORGED_ID},tenant=t-1`]);
  });

  describe('in the span processor', () => {
    let setUp: ReturnType<typeof processorUnderTest>;
    afterEach(() => setUp?.provider.shutdown());

    it('stamps no span from a client’s baggage by default, and later spans of a request get the middleware’s ID', () => {
      setUp = processorUnderTest();
      const { start, stamped } = setUp;
      const inbound = fromClient({ [BAGGAGE_CORRELATION_ID]: FORGED_ID });
      // A request without a key: nothing computes an ID, so none may come from the client.
      start('keyless server', inbound).end();
      const server = start('server', inbound);
      start('ended before the middleware', under(server, inbound)).end();
      stampActiveRequest(under(server, inbound), ID);
      start('after the middleware', under(server, inbound)).end();
      server.end();

      expect(['keyless server', 'ended before the middleware', 'after the middleware', 'server'].map(stamped)).toEqual([undefined, undefined, ID, ID]);
    });

    it('stamps spans from the middleware’s own baggage even when it tracks no request for them', () => {
      setUp = processorUnderTest({ maxTrackedRequests: 1 });
      const { start, stamped } = setUp;
      const server = start('server', fromClient({ [BAGGAGE_CORRELATION_ID]: FORGED_ID }));
      start('newer request').end(); // evicts the server's request
      start('query', withCorrelationBaggage(under(server), ID)).end();
      server.end();

      expect(stamped('query')).toBe(ID);
    });

    it('stamps spans from upstream baggage with trustInboundCorrelationId, as in a downstream service without the middleware', () => {
      setUp = processorUnderTest({ trustInboundCorrelationId: true });
      const { start, stamped } = setUp;
      const inbound = fromClient({ [BAGGAGE_CORRELATION_ID]: FORGED_ID });
      const server = start('downstream server', inbound);
      start('downstream query', under(server, inbound)).end();
      server.end();

      expect(['downstream server', 'downstream query'].map(stamped)).toEqual([FORGED_ID, FORGED_ID]);
    });

    it('ignores a malformed ID in trusted baggage (it would end up in every span)', () => {
      setUp = processorUnderTest({ trustInboundCorrelationId: true });
      setUp.start('server', fromClient({ [BAGGAGE_CORRELATION_ID]: 'not an id; <script>' })).end();

      expect(setUp.stamped('server')).toBeUndefined();
    });
  });
});

describe('span processor memory under a long-lived root span', () => {
  it('tracks only the open spans: 100,000 ended children under one open root leave the root alone tracked', async () => {
    const { processor, provider, start, stamped } = processorUnderTest();
    const root = start('long-lived root');
    stampActiveRequest(under(root), ID);
    for (let i = 0; i < 100_000; i += 1) start('child', under(root)).end();

    expect(processor.trackedSpanCount).toBe(1);
    // Pruning forgets no request: a later child, and a child of an ended child, still get the root's ID.
    const endedChild = start('ended child', under(root));
    endedChild.end();
    start('child of an ended child', under(endedChild)).end();
    start('later child', under(root)).end();
    expect(processor.trackedSpanCount).toBe(1);
    root.end();

    expect(['ended child', 'child of an ended child', 'later child', 'long-lived root'].map(stamped)).toEqual([ID, ID, ID, ID]);
    expect(processor.trackedSpanCount).toBe(0);
    await provider.shutdown();
  });
});

describe('trace flags of 0x10 or more', () => {
  const hex = (length: number) =>
    fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: length, maxLength: length }).filter((value) => /[1-9a-f]/.test(value));

  it('formats every trace flags value 0..255 as a traceparent that parses back to the same span context', () => {
    fc.assert(
      fc.property(hex(32), hex(16), (traceId, spanId) => {
        const lost: number[] = [];
        for (let traceFlags = 0; traceFlags <= 0xff; traceFlags += 1) {
          const parsed = parseTraceparent(formatTraceparent({ traceId, spanId, traceFlags, isRemote: false }));
          if (parsed?.traceId !== traceId || parsed.spanId !== spanId || parsed.traceFlags !== traceFlags) lost.push(traceFlags);
        }
        expect(lost).toEqual([]);
      }),
      { numRuns: 50 },
    );
  });

  it('links a replay to an original request whose span had trace flags 0x10 or more', () => {
    const original = { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16), traceFlags: 0x11, isRemote: false };
    const traceparent = context.with(trace.setSpan(ROOT_CONTEXT, trace.wrapSpanContext(original)), () =>
      new RequestTelemetry(SCOPE, 'flags-key', LABELS, TELEMETRY_OPTIONS).traceparent(),
    );
    const record = { traceparent, ageMs: 1_000 } as IdempotencyRecord;

    const replay = trace.getTracer('hardening').startSpan('replay');
    context.with(trace.setSpan(ROOT_CONTEXT, replay), () => new RequestTelemetry(SCOPE, 'flags-key', LABELS, TELEMETRY_OPTIONS).duplicate(OUTCOME.REPLAYED, record));
    replay.end();

    const exported = spansOfTrace(telemetry.exporter, replay.spanContext().traceId).find((span) => span.name === 'replay');
    expect(exported?.links.map((link) => link.context)).toEqual([{ traceId: original.traceId, spanId: original.spanId, traceFlags: 0x11, isRemote: true }]);
  });
});
