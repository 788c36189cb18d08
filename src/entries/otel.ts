/**
 * koa-idempotency/otel: the OpenTelemetry side, for the code that sets up the SDK and the dashboards and
 * queries that read what the middleware records: the span processor, the sampler, the key-hash attributes,
 * and every attribute, event and metric name.
 */
export { ATTR, EVENT, METRIC, OUTCOME, OPERATION, MODE, NOT_REPLAYABLE_REASON, BAGGAGE_CORRELATION_ID, INSTRUMENTATION_SCOPE } from '../telemetry/names.js';
export type { Outcome, Operation, Mode, NotReplayableReason } from '../telemetry/names.js';
export { correlationIdFor } from '../telemetry/correlation.js';
export { CorrelationSpanProcessor, DEFAULT_MAX_TRACKED_REQUESTS } from '../telemetry/correlation-span-processor.js';
export type { CorrelationSpanProcessorOptions } from '../telemetry/correlation-span-processor.js';
export { idempotencyTracing, REQUIRED_PROPAGATORS } from '../telemetry/sdk-setup.js';
export type { IdempotencyTracing } from '../telemetry/sdk-setup.js';
export { idempotencySampler } from '../telemetry/idempotency-sampler.js';
export type { IdempotencySamplerOptions } from '../telemetry/idempotency-sampler.js';
export { keyHashAttributes } from '../telemetry/key-hash-attributes.js';
export type { KeyHashAttributesOptions } from '../telemetry/key-hash-attributes.js';
