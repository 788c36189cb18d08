import { context, propagation, ROOT_CONTEXT, SpanKind, trace, TraceFlags, type Context, type Sampler } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { ParentBasedSampler } from '@opentelemetry/sdk-trace';
import { createComposableProbabilitySampler, createCompositeSampler } from '@opentelemetry/sampler-composite';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotencySampler, keyHashAttributes } from '../../src/entries/otel.js';
import { tracerProvider } from '../helpers/otel-sdk.js';

/**
 * Consistent sampling across services (OTEP 235): service A samples with the intent sampler at 0.5; it calls
 * service B, which runs the SDK's own consistent ProbabilitySampler at 0.25 (not parent-based: a second
 * sampler that makes its own decision, as a Collector's would). Each service is its own TracerProvider; the
 * only thing between them is the W3C traceparent and tracestate headers, injected and extracted by the SDK's
 * propagator. Every attempt of an intent is a new trace, so only the intent's `rv` can keep B consistent.
 */
const INTENTS = 200;
const ATTEMPTS = 3;
const RATIO_A = 0.5;
const RATIO_B = 0.25;
const propagator = new W3CTraceContextPropagator();

function service(name: string, sampler: Sampler) {
  const provider = tracerProvider({ sampler });
  const tracer = provider.getTracer(name);
  return {
    provider,
    /** Starts and ends the service's server span for an inbound request; returns whether it was kept and the headers it sends on. */
    handle(headers: Record<string, string>, attributes = {}): { kept: boolean; th: string | undefined; outbound: Record<string, string> } {
      const parent: Context = propagation.extract(ROOT_CONTEXT, headers, undefined);
      const span = tracer.startSpan('POST /orders', { kind: SpanKind.SERVER, attributes }, parent);
      const outbound: Record<string, string> = {};
      propagator.inject(trace.setSpan(ROOT_CONTEXT, span), outbound, { set: (carrier, key, value) => (carrier[key] = value) });
      const spanContext = span.spanContext();
      span.end();
      const ot = spanContext.traceState?.get('ot');
      return { kept: (spanContext.traceFlags & TraceFlags.SAMPLED) !== 0, th: /th:([0-9a-f]+)/.exec(ot ?? '')?.[1], outbound };
    },
  };
}

/** The adjusted count a Collector computes from a kept span's `th` (OTEP 235): 2^56 / (2^56 - th). */
const adjustedCount = (th: string) => 2 ** 56 / (2 ** 56 - Number(BigInt(`0x${th.padEnd(14, '0')}`)));

describe('idempotencySampler with a consistent sampler downstream', () => {
  propagation.setGlobalPropagator(propagator);
  const a = service('service-a', new ParentBasedSampler({ root: idempotencySampler({ ratio: RATIO_A }) }));
  const b = service('service-b', createCompositeSampler(createComposableProbabilitySampler(RATIO_B)));
  afterAll(async () => {
    await Promise.all([a.provider.shutdown(), b.provider.shutdown()]);
    propagation.disable();
  });

  /** Sends every attempt of every intent through A then B; `forward` may rewrite the headers A sends on. */
  function run(forward: (headers: Record<string, string>) => Record<string, string> = (headers) => headers) {
    return Array.from({ length: INTENTS }, (_, intent) => {
      const attributes = keyHashAttributes({ headers: { 'idempotency-key': `intent-${intent}` } });
      return Array.from({ length: ATTEMPTS }, () => {
        const inA = context.with(ROOT_CONTEXT, () => a.handle({}, attributes));
        const inB = b.handle(forward(inA.outbound));
        return { a: inA, b: inB };
      });
    });
  }

  const splits = (intents: ReturnType<typeof run>, side: 'a' | 'b') =>
    intents.filter((attempts) => new Set(attempts.map((attempt) => attempt[side].kept)).size > 1).length;
  const share = (intents: ReturnType<typeof run>, side: 'a' | 'b') => intents.filter((attempts) => attempts[0]![side].kept).length / INTENTS;

  it(`splits no intent in either service (${INTENTS} intents × ${ATTEMPTS} attempts, ratios ${RATIO_A} then ${RATIO_B})`, () => {
    const intents = run();
    console.log(`kept shares: A ${share(intents, 'a')}, B ${share(intents, 'b')}; split intents: A ${splits(intents, 'a')}, B ${splits(intents, 'b')}`);
    expect(splits(intents, 'a')).toBe(0);
    expect(splits(intents, 'b')).toBe(0);
    expect(Math.abs(share(intents, 'a') - RATIO_A)).toBeLessThanOrEqual(0.1);
    expect(Math.abs(share(intents, 'b') - RATIO_B)).toBeLessThanOrEqual(0.1);
    // Consistent: B's lower ratio keeps a subset of the intents A keeps.
    expect(intents.filter((attempts) => attempts[0]!.b.kept && !attempts[0]!.a.kept)).toEqual([]);
  });

  it('writes thresholds from which each service’s adjusted count is 1 / its ratio', () => {
    const attempts = run().flat();
    expect(new Set(attempts.filter((attempt) => attempt.a.kept).map((attempt) => adjustedCount(attempt.a.th!)))).toEqual(new Set([1 / RATIO_A]));
    expect(new Set(attempts.filter((attempt) => attempt.b.kept).map((attempt) => adjustedCount(attempt.b.th!)))).toEqual(new Set([1 / RATIO_B]));
  });

  it('would split intents downstream without the rv it writes (the trace ID is then the randomness)', () => {
    const withoutOt = (headers: Record<string, string>) => ({ traceparent: headers.traceparent! });
    const intents = run(withoutOt);
    console.log(`without rv: split intents in B ${splits(intents, 'b')} of ${INTENTS}`);
    expect(splits(intents, 'a')).toBe(0);
    expect(splits(intents, 'b')).toBeGreaterThan(0);
  });
});
