import type { IncomingHttpHeaders } from 'node:http';
import { SamplingDecision, isValidTraceId, type Attributes, type Sampler, type SamplingResult } from '@opentelemetry/api';
import { DEFAULT_HEADER_NAME, DEFAULT_MAX_KEY_LENGTH } from '../options.js';
import { readKey } from '../key.js';
import { numberInRange } from '../validation.js';
import { keyHash } from './correlation.js';
import { ATTR } from './names.js';

/**
 * Head sampling that keeps or drops every request of one intent together. With trace-ID ratio sampling the
 * original and a retry are both kept only ratio² of the time, so most kept retries would point (by their
 * `idempotency.original_trace_id` and span link) at an original that was dropped. This sampler decides a keyed
 * request on the hash of its Idempotency-Key instead: the original and every retry carry the same key, so they
 * get the same decision. Requests without a key fall back to a trace-ID ratio, as `TraceIdRatioBasedSampler`.
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

/** Both hashes are read as 32-bit values, as TraceIdRatioBasedSampler reads trace IDs. */
const ALL_32_BIT_VALUES = 0x1_0000_0000;

export function idempotencySampler(options: IdempotencySamplerOptions = {}): Sampler {
  const ratio = numberInRange(options.ratio ?? 1, 'idempotencySampler: ratio', 0, 1);
  // Sampled when the 32-bit value is below this bound: ratio 1 keeps all, ratio 0 none. The bound is
  // TraceIdRatioBasedSampler's, so an unkeyed trace gets exactly the decision that sampler would make.
  const bound = ratio === 1 ? ALL_32_BIT_VALUES : Math.floor(ratio * 0xffff_ffff);
  const decide = (value: number): SamplingResult => ({ decision: value < bound ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD });
  return {
    shouldSample(_context, traceId, _spanName, _spanKind, attributes: Attributes) {
      const hash = attributes[ATTR.KEY_HASH];
      if (typeof hash === 'string' && /^[0-9a-f]{8}/.test(hash)) return decide(parseInt(hash.slice(0, 8), 16));
      return isValidTraceId(traceId) ? decide(traceIdValue(traceId)) : { decision: SamplingDecision.NOT_RECORD };
    },
    toString: () => `IdempotencySampler{ratio=${ratio}}`,
  };
}

/** TraceIdRatioBasedSampler's reading of a trace ID (its 32-bit words XORed), reimplemented on the API alone. */
function traceIdValue(traceId: string): number {
  let accumulation = 0;
  for (let i = 0; i < 32; i += 8) accumulation = (accumulation ^ parseInt(traceId.slice(i, i + 8), 16)) >>> 0;
  return accumulation;
}

/**
 * `{ 'idempotency.key_hash': … }` for a request that carries an idempotency key, else `{}`: for the HTTP
 * instrumentation's `startIncomingSpanHook`, so the hash is on the server span when it starts, where
 * samplers see it. The header is read as the middleware reads it (a quoted key is unquoted), so the hash is
 * the one the middleware sets; a header it would refuse gets none (that request falls back to the trace ID).
 * Pass the middleware's `headerName` if it is not the default.
 */
export function keyHashAttributes(request: { headers: IncomingHttpHeaders }, headerName: string = DEFAULT_HEADER_NAME): Attributes {
  const reading = readKey(request.headers[headerName.toLowerCase()], { minKeyLength: 1, maxKeyLength: DEFAULT_MAX_KEY_LENGTH });
  return reading.kind === 'valid' ? { [ATTR.KEY_HASH]: keyHash(reading.key) } : {};
}
