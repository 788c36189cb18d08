import { trace, type Context as OtelContext, type Span, type SpanContext } from '@opentelemetry/api';
import { positiveInteger } from '../validation.js';
import { localCorrelationId, upstreamCorrelationId } from './correlation.js';
import { ATTR } from './names.js';
import { registerStamper, unregisterStamper, type RequestStamper } from './span-stamping.js';

export const DEFAULT_MAX_TRACKED_REQUESTS = 10_000;

export interface CorrelationSpanProcessorOptions {
  /**
   * Requests whose open spans are tracked at once. Beyond it the oldest request is forgotten (its later
   * spans still get the ID from the middleware's baggage), so a span that is never ended cannot grow
   * memory without bound. Ended spans are never held: a long-lived request costs its open spans only.
   * @default 10000
   */
  maxTrackedRequests?: number;
  /**
   * Stamp spans from a correlation ID that arrived in the caller's W3C baggage. Off, a client cannot put
   * an ID of its choice on spans (of a request without a key, or that end before the middleware runs).
   * Turn it on in a service whose callers are all inside your trust boundary and whose spans outside the
   * middleware should carry the caller's ID: a downstream service without the middleware, or with
   * `telemetry.trustInboundCorrelationId` on.
   * @default false
   */
  trustInboundCorrelationId?: boolean;
}

/** The spans of one request in this service: the local root (the HTTP server span) and its descendants. */
interface RequestSpans {
  root: Span;
  correlationId: string | undefined;
  open: Map<string, Span>;
  /** No longer tracked: a late child of one of its spans starts a request of its own. */
  forgotten: boolean;
}

/**
 * Stamps `idempotency.correlation_id` on every span of a request, including the spans that started
 * before the middleware knew the ID. Register it with the SDK before the exporting processor:
 *
 * - a span started with the middleware's ID in its parent context (its baggage) is stamped in `onStart`;
 * - the spans already open when the middleware learns the ID (the HTTP server span, outer Koa
 *   middleware spans) are stamped then, because the processor tracks the open spans of each request;
 * - a span started later outside the middleware's context (an outer middleware after `await next()`) is
 *   stamped from its request's ID;
 * - with `trustInboundCorrelationId`, a span is also stamped from the caller's baggage at its start.
 *
 * A "request" is a local root span (no parent, or a remote parent) and its local descendants. Spans
 * that ended before the middleware ran (a query in an authentication middleware) cannot be changed.
 *
 * It implements the SDK's `SpanProcessor` structurally, so the library depends on `@opentelemetry/api` only.
 */
export class CorrelationSpanProcessor implements RequestStamper {
  readonly #maxTrackedRequests: number;
  readonly #trustInbound: boolean;
  /** Keyed by the local root's span key, oldest first (Map keeps insertion order). */
  readonly #requests = new Map<string, RequestSpans>();
  /** Open spans only: an entry goes when its span ends, so memory follows the open spans, not all spans. */
  readonly #requestOfOpenSpan = new Map<string, RequestSpans>();
  /**
   * Every span's request, held weakly: a child started under an ended span still finds its request, and
   * the entry goes with the span object once the SDK has exported it.
   */
  readonly #requestOfSpan = new WeakMap<Span, RequestSpans>();

  constructor(options: CorrelationSpanProcessorOptions = {}) {
    this.#maxTrackedRequests = positiveInteger(options.maxTrackedRequests ?? DEFAULT_MAX_TRACKED_REQUESTS, 'maxTrackedRequests');
    this.#trustInbound = options.trustInboundCorrelationId === true;
    registerStamper(this);
  }

  /** Spans tracked right now, across requests: the open ones (diagnostics; the memory regression test reads it). */
  get trackedSpanCount(): number {
    return this.#requestOfOpenSpan.size;
  }

  onStart(span: Span, parentContext: OtelContext): void {
    const key = spanKey(span.spanContext());
    const request = this.#requestOfParent(parentContext) ?? this.#newRequest(key, span);
    request.open.set(key, span);
    this.#requestOfOpenSpan.set(key, request);
    this.#requestOfSpan.set(span, request);
    // The middleware's own ID first, then the request's: inbound baggage is the caller's choice.
    const correlationId = localCorrelationId(parentContext) ?? request.correlationId ?? this.#inboundCorrelationId(parentContext);
    if (correlationId === undefined) return;
    request.correlationId ??= correlationId;
    span.setAttribute(ATTR.CORRELATION_ID, correlationId);
  }

  onEnd(span: { spanContext(): SpanContext }): void {
    const key = spanKey(span.spanContext());
    const request = this.#requestOfOpenSpan.get(key);
    if (!request) return;
    this.#requestOfOpenSpan.delete(key);
    request.open.delete(key);
    if (request.open.size === 0) this.#forget(request);
  }

  /** Called by the middleware: stamps the open spans of the request that `active` belongs to. */
  stamp(active: SpanContext, correlationId: string, activeSpan?: Span): void {
    const request = this.#requestOf(active, activeSpan);
    if (!request) return;
    request.correlationId = correlationId;
    for (const span of request.open.values()) span.setAttribute(ATTR.CORRELATION_ID, correlationId);
  }

  /** The local root (server) span of the request that `active` belongs to, while it is open. */
  requestSpan(active: SpanContext, activeSpan?: Span): Span | undefined {
    const request = this.#requestOf(active, activeSpan);
    return request && request.open.has(spanKey(request.root.spanContext())) ? request.root : undefined;
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    unregisterStamper(this);
    for (const request of this.#requests.values()) request.forgotten = true;
    this.#requests.clear();
    this.#requestOfOpenSpan.clear();
    return Promise.resolve();
  }

  #inboundCorrelationId(parentContext: OtelContext): string | undefined {
    return this.#trustInbound ? upstreamCorrelationId(parentContext) : undefined;
  }

  /** The request of the parent span when it is a local one we track; a remote parent starts a request. */
  #requestOfParent(parentContext: OtelContext): RequestSpans | undefined {
    const parent = trace.getSpanContext(parentContext);
    if (!parent || parent.isRemote || !trace.isSpanContextValid(parent)) return undefined;
    return this.#requestOf(parent, trace.getSpan(parentContext));
  }

  /** The tracked request of a span: by key while it is open, by the span object after it ended. */
  #requestOf(spanContext: SpanContext, span: Span | undefined): RequestSpans | undefined {
    const request = this.#requestOfOpenSpan.get(spanKey(spanContext)) ?? (span && this.#requestOfSpan.get(span));
    return request && !request.forgotten ? request : undefined;
  }

  #newRequest(key: string, root: Span): RequestSpans {
    const request: RequestSpans = { root, correlationId: undefined, open: new Map(), forgotten: false };
    this.#requests.set(key, request);
    if (this.#requests.size > this.#maxTrackedRequests) {
      const oldest = this.#requests.values().next().value;
      if (oldest) this.#forget(oldest);
    }
    return request;
  }

  #forget(request: RequestSpans): void {
    request.forgotten = true;
    this.#requests.delete(spanKey(request.root.spanContext()));
    for (const key of request.open.keys()) this.#requestOfOpenSpan.delete(key);
    request.open.clear();
  }
}

function spanKey(spanContext: SpanContext): string {
  return `${spanContext.traceId}-${spanContext.spanId}`;
}
