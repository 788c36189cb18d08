import { SamplingDecision, isValidTraceId, trace, type Attributes, type Context, type Sampler, type SamplingResult } from '@opentelemetry/api';
import { numberInRange } from '../validation.js';
import { inboundRandomness, keeps, randomnessOfHex, randomnessOfTraceId, thresholdOf, withSamplingState } from './consistent-sampling.js';
import { ATTR } from './names.js';

/**
 * Head sampling that keeps or drops every request of one intent together, and tells every sampler after it
 * why. With trace-ID ratio sampling the original and a retry are both kept only ratio² of the time, so most
 * kept retries would point (by their `idempotency.original_trace_id` and span link) at an original that was
 * dropped. This sampler decides a keyed request on the hash of its Idempotency-Key instead: the original and
 * every retry carry the same key, so they get the same decision.
 *
 * It speaks consistent probability sampling (OTEP 235): the randomness of a keyed request is the key hash's
 * first 56 bits, written to the tracestate as `ot=rv:…`, and a kept span carries the threshold it was kept
 * at (`ot=th:…`). A downstream service or Collector running a consistent sampler (the SDK's
 * ProbabilitySampler, a Collector's probabilistic sampler in proportional mode) reads that same `rv`, so at
 * its own ratio it too keeps or drops whole intents, and it computes adjusted counts from `th`. A request
 * without a key uses the caller's `rv` if it sent one, else the trace ID's last 56 bits, exactly as the
 * SDK's consistent ProbabilitySampler does.
 *
 * The server span starts before Koa runs, so the sampler cannot see the middleware's scope: the decision uses
 * the key alone. Keys are chosen per principal, so two principals who happen to send the same key share a
 * decision, which is harmless (each intent is still kept or dropped whole). The raw key is never read here:
 * the sampler reads `idempotency.key_hash`, which `keyHashAttributes` puts on the span at its start through the
 * HTTP instrumentation's hook (the middleware later sets the same value):
 *
 *     new NodeSDK({
 *       sampler: new ParentBasedSampler({ root: idempotencySampler({ ratio: 0.1 }) }),
 *       instrumentations: [new HttpInstrumentation({ startIncomingSpanHook: (request) => keyHashAttributes(request) })],
 *     });
 *
 * As the root of a ParentBasedSampler, downstream services follow the caller's decision (the traceparent's
 * sampled flag), so an intent's spans in every service are kept or dropped together.
 */
export interface IdempotencySamplerOptions {
  /** Share of intents (and of unkeyed traces) kept, from 0 to 1. @default 1 */
  ratio?: number;
}

export function idempotencySampler(options: IdempotencySamplerOptions = {}): Sampler {
  const ratio = numberInRange(options.ratio ?? 1, 'idempotencySampler: ratio', 0, 1);
  const threshold = thresholdOf(ratio);
  return {
    shouldSample(context: Context, traceId: string, _spanName, _spanKind, attributes: Attributes): SamplingResult {
      const callerState = trace.getSpanContext(context)?.traceState;
      const hash = attributes[ATTR.KEY_HASH];
      // The key's randomness is written out: nothing downstream can derive it from the trace ID.
      const keyRandomness = typeof hash === 'string' ? randomnessOfHex(hash) : undefined;
      const callerRandomness = keyRandomness === undefined ? inboundRandomness(callerState) : undefined;
      if (keyRandomness === undefined && callerRandomness === undefined && !isValidTraceId(traceId)) {
        return { decision: SamplingDecision.NOT_RECORD };
      }
      const randomness = keyRandomness ?? callerRandomness ?? randomnessOfTraceId(traceId);
      const kept = keeps(randomness, threshold);
      return {
        decision: kept ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD,
        traceState: withSamplingState(callerState, { randomness: keyRandomness ?? callerRandomness, threshold: kept ? threshold : undefined }),
      };
    },
    toString: () => `IdempotencySampler{ratio=${ratio}}`,
  };
}
