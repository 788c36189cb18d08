import { propagation, ROOT_CONTEXT, trace, TraceFlags, type Context, type Span } from '@opentelemetry/api';
import { ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor, type BaggageKeyPredicate } from '@opentelemetry/baggage-span-processor';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, BAGGAGE_CORRELATION_ID, CorrelationSpanProcessor } from '../../src/entries/otel.js';
import { withCorrelationBaggage } from '../../src/telemetry/correlation.js';
import { stampActiveRequest } from '../../src/telemetry/span-stamping.js';
import { tracerProvider } from '../helpers/otel-sdk.js';

/**
 * The contrib BaggageSpanProcessor copies baggage entries onto every span at its start. Inbound baggage is the
 * client's: allowed to copy every key, it stamps a client's forged `idempotency.correlation_id` on spans the
 * middleware never corrects (a request without a key; spans that end before the middleware runs).
 * docs/telemetry.md configures it to skip our key, which CorrelationSpanProcessor stamps anyway.
 */
const FORGED_ID = 'client-chosen-0123456789';
const OUR_ID = 'corr-0123456789abcdef';
/** The predicate docs/telemetry.md shows. */
const SKIP_OUR_KEY: BaggageKeyPredicate = (key) => key !== BAGGAGE_CORRELATION_ID;

/** A context as an HTTP server sees a client's request: a remote parent and the client's baggage. */
function fromClient(): Context {
  const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: TraceFlags.SAMPLED, isRemote: true });
  const baggage = propagation.createBaggage({ [BAGGAGE_CORRELATION_ID]: { value: FORGED_ID }, tenant: { value: 't-1' } });
  return propagation.setBaggage(parent, baggage);
}

describe('the contrib BaggageSpanProcessor beside CorrelationSpanProcessor', () => {
  let shutdown: (() => Promise<void>) | undefined;
  afterEach(() => shutdown?.());

  /** One request without a key and one with, as the HTTP instrumentation and the middleware shape their spans. */
  function requests(keyPredicate: BaggageKeyPredicate) {
    const ended = new Map<string, ReadableSpan>();
    const recorder: SpanProcessor = {
      onStart: () => undefined,
      onEnd: (span) => void ended.set(span.name, span),
      forceFlush: async () => undefined,
      shutdown: async () => undefined,
    };
    const provider = tracerProvider({ spanProcessors: [new BaggageSpanProcessor(keyPredicate), new CorrelationSpanProcessor(), recorder] });
    shutdown = () => provider.shutdown();
    const tracer = provider.getTracer('baggage');
    const start = (name: string, parent: Context): Span => tracer.startSpan(name, {}, parent);
    const inbound = fromClient();

    start('unkeyed server', inbound).end();
    const server = start('keyed server', inbound);
    const underServer = trace.setSpan(inbound, server);
    start('ended before the middleware', underServer).end();
    stampActiveRequest(underServer, OUR_ID); // what the middleware does once it has computed the ID
    start('handler query', withCorrelationBaggage(underServer, OUR_ID)).end();
    server.end();

    return Object.fromEntries([...ended].map(([name, span]) => [name, { id: span.attributes[ATTR.CORRELATION_ID], tenant: span.attributes.tenant }]));
  }

  it('copying every baggage key, stamps the client’s forged correlation ID on spans the middleware never corrects', () => {
    const spans = requests(ALLOW_ALL_BAGGAGE_KEYS);
    expect(spans['unkeyed server']?.id).toBe(FORGED_ID);
    expect(spans['ended before the middleware']?.id).toBe(FORGED_ID);
  });

  it('configured as docs/telemetry.md shows, copies the other keys and leaves the correlation ID to CorrelationSpanProcessor', () => {
    expect(requests(SKIP_OUR_KEY)).toEqual({
      'unkeyed server': { id: undefined, tenant: 't-1' },
      'ended before the middleware': { id: undefined, tenant: 't-1' },
      'handler query': { id: OUR_ID, tenant: 't-1' },
      'keyed server': { id: OUR_ID, tenant: 't-1' },
    });
  });
});
