import { diag, propagation } from '@opentelemetry/api';
import { CorrelationSpanProcessor, type CorrelationSpanProcessorOptions } from './correlation-span-processor.js';

/**
 * The `OTEL_PROPAGATORS` names the application's SDK must use: W3C trace context links the services'
 * spans, W3C baggage carries the correlation ID downstream. Both are the NodeSDK default.
 */
export const REQUIRED_PROPAGATORS = ['tracecontext', 'baggage'] as const;

/** The header each required propagator injects (what the global propagator's `fields()` lists). */
const PROPAGATOR_HEADERS: Record<(typeof REQUIRED_PROPAGATORS)[number], string> = { tracecontext: 'traceparent', baggage: 'baggage' };

export interface IdempotencyTracing {
  /** Put it first in the SDK's `spanProcessors`, before the exporting (batch) processor. */
  spanProcessor: CorrelationSpanProcessor;
  /** The propagators the SDK must use (`textMapPropagator`, or `OTEL_PROPAGATORS`). */
  propagators: typeof REQUIRED_PROPAGATORS;
  /**
   * Call after the SDK started: returns the required propagators the global propagator lacks (empty
   * when all is well) and reports them through `diag.warn`.
   */
  checkPropagation(): string[];
}

/**
 * What the application adds when it builds its OpenTelemetry SDK, e.g.
 *
 * ```ts
 * const tracing = idempotencyTracing();
 * const sdk = new NodeSDK({ spanProcessors: [tracing.spanProcessor, new BatchSpanProcessor(exporter)], ... });
 * sdk.start();
 * tracing.checkPropagation();
 * ```
 */
export function idempotencyTracing(options: CorrelationSpanProcessorOptions = {}): IdempotencyTracing {
  return {
    spanProcessor: new CorrelationSpanProcessor(options),
    propagators: REQUIRED_PROPAGATORS,
    checkPropagation: missingPropagators,
  };
}

function missingPropagators(): string[] {
  const fields = new Set(propagation.fields().map((field) => field.toLowerCase()));
  const missing = REQUIRED_PROPAGATORS.filter((name) => !fields.has(PROPAGATOR_HEADERS[name]));
  if (missing.length > 0) {
    diag.warn(
      `koa-idempotency: the global propagator lacks ${missing.join(', ')}; the correlation ID will not reach downstream services. ` +
        `Use OTEL_PROPAGATORS=${REQUIRED_PROPAGATORS.join(',')} (the NodeSDK default) or an equivalent textMapPropagator.`,
    );
  }
  return missing;
}
