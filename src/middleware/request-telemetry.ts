import { context, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';
import type { TelemetryOptions } from './options.js';
import type { IdempotencyRecord } from '../store/types.js';
import { contextPropagates, correlationIdFor, keyHash, upstreamCorrelationId, withCorrelationBaggage } from '../telemetry/correlation.js';
import { errorType, libraryInstruments } from '../telemetry/metrics.js';
import { ATTR, EVENT, OPERATION, OUTCOME, type Mode, type NotReplayableReason, type Operation, type Outcome } from '../telemetry/names.js';
import { requestSpanOf, stampActiveRequest } from '../telemetry/span-stamping.js';
import { formatTraceparent, parseTraceparent } from '../telemetry/traceparent.js';

/**
 * The telemetry options the request reads. `trustInboundCorrelationId` is optional here so that a caller
 * that does not set it gets the safe default (the computed ID).
 */
export type RequestTelemetryOptions = Pick<Required<TelemetryOptions>, 'recordRawKey' | 'recordScope'> & { trustInboundCorrelationId?: boolean };

/**
 * The telemetry of one request that carries a key: attributes and events on the request's span (the
 * HTTP server span when a CorrelationSpanProcessor is registered, else the active span), the correlation
 * ID on every span of the request and in baggage for everything the handler calls, and the request metrics.
 */
export class RequestTelemetry {
  readonly correlationId: string;
  readonly #span: Span | undefined;
  readonly #metricAttributes: Attributes;
  readonly #startedMs = performance.now();
  #outcome: Outcome | undefined;

  /** `labels.mode` (lease or transactional) goes on the request's span only: the metrics keep their labels. */
  constructor(scope: string, key: string, labels: { route: string; method: string; mode?: Mode }, options: RequestTelemetryOptions) {
    const active = context.active();
    // Inbound baggage is the caller's choice: a client could split its retries across IDs or adopt another
    // intent's. Only a caller inside the trust boundary (an upstream service) may hand its ID down.
    const upstream = options.trustInboundCorrelationId === true ? upstreamCorrelationId(active) : undefined;
    this.correlationId = upstream ?? correlationIdFor(scope, key);
    this.#span = requestSpanOf(active);
    this.#metricAttributes = { [ATTR.HTTP_ROUTE]: labels.route, [ATTR.HTTP_METHOD]: labels.method };
    // Built only for a span that keeps them: with no SDK, or a request sampled out, the key's hash is never read.
    if (this.#span?.isRecording()) {
      const attributes: Attributes = { [ATTR.CORRELATION_ID]: this.correlationId, [ATTR.KEY_HASH]: keyHash(key) };
      if (labels.mode) attributes[ATTR.MODE] = labels.mode;
      if (options.recordRawKey) attributes[ATTR.KEY] = key;
      if (options.recordScope) attributes[ATTR.SCOPE] = scope;
      this.#span.setAttributes(attributes);
    }
    // The active span (the middleware's own, under the Koa instrumentation) even with no processor registered.
    trace.getSpan(active)?.setAttribute(ATTR.CORRELATION_ID, this.correlationId);
    stampActiveRequest(active, this.correlationId);
  }

  /** Runs the rest of the request with the correlation ID in baggage, so outgoing calls carry it. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    if (!contextPropagates()) return fn();
    return context.with(withCorrelationBaggage(context.active(), this.correlationId), fn);
  }

  /** The W3C traceparent of the request's span, stored with a claim so replays can link to it. */
  traceparent(): string | undefined {
    const spanContext = this.#span?.spanContext();
    if (!spanContext || !trace.isSpanContextValid(spanContext)) return undefined;
    return formatTraceparent(spanContext);
  }

  /** A duplicate was answered from an existing record: event, link to the original, record age. */
  duplicate(outcome: Outcome, record: IdempotencyRecord): void {
    const original = parseTraceparent(record.traceparent);
    const attributes: Attributes = { [ATTR.REASON]: outcome, [ATTR.RECORD_AGE]: record.ageMs / 1000 };
    if (original) attributes[ATTR.ORIGINAL_TRACE_ID] = original.traceId;
    this.#span?.addEvent(EVENT.DUPLICATE, attributes);
    this.#span?.setAttribute(ATTR.RECORD_AGE, record.ageMs / 1000);
    if (original && outcome === OUTCOME.REPLAYED) this.#span?.addLink({ context: original, attributes: { [ATTR.REASON]: outcome } });
  }

  /**
   * A duplicate of a request still in progress, while no record was visible yet (the store's `busy` claim:
   * another transaction holds the key), so there is no record age or original trace to add.
   */
  inProgress(): void {
    this.#span?.addEvent(EVENT.DUPLICATE, { [ATTR.REASON]: OUTCOME.IN_PROGRESS });
  }

  /** The executed request's response was stored as not replayable: why, for whoever looks into its retries' 409s. */
  notReplayable(reason: NotReplayableReason): void {
    this.#span?.setAttribute(ATTR.NOT_REPLAYABLE_REASON, reason);
  }

  takeover(record: IdempotencyRecord): void {
    this.#span?.addEvent(EVENT.TAKEOVER, { [ATTR.ATTEMPT]: record.attempt });
  }

  /** A store operation failed: the exception as a span event, ERROR status, and its type (`error.type`). */
  storeFailure(error: unknown, operation: Operation = OPERATION.CLAIM): void {
    this.#span?.recordException(error instanceof Error ? error : String(error));
    this.#span?.setStatus({ code: SpanStatusCode.ERROR, message: `idempotency store ${operation} failed` });
    const type = errorType(error);
    this.#span?.setAttributes({ [ATTR.ERROR_TYPE]: type, [ATTR.STORE_ERROR_TYPE]: type });
  }

  claimed(): void {
    libraryInstruments().activeRequests.add(1, this.#metricAttributes);
  }

  unclaimed(): void {
    libraryInstruments().activeRequests.add(-1, this.#metricAttributes);
  }

  waited(seconds: number, outcome: Outcome): void {
    libraryInstruments().waitDuration.record(seconds, { ...this.#metricAttributes, [ATTR.OUTCOME]: outcome });
  }

  /** Records the final outcome once: span attribute, request counter and duration. */
  finish(outcome: Outcome): void {
    if (this.#outcome) return;
    this.#outcome = outcome;
    this.#span?.setAttribute(ATTR.OUTCOME, outcome);
    const attributes = { ...this.#metricAttributes, [ATTR.OUTCOME]: outcome };
    const instruments = libraryInstruments();
    instruments.requests.add(1, attributes);
    instruments.requestDuration.record((performance.now() - this.#startedMs) / 1000, attributes);
  }
}
