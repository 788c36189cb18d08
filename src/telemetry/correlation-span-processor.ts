import { trace, type Context as OtelContext, type Span, type SpanContext } from '@opentelemetry/api';
import { upstreamCorrelationId } from './correlation.js';
import { ATTR } from './names.js';
import { registerStamper, unregisterStamper, type RequestStamper } from './span-stamping.js';

export const DEFAULT_MAX_TRACKED_REQUESTS = 10_000;

export interface CorrelationSpanProcessorOptions {
  /**
   * Requests whose open spans are tracked at once. Beyond it the oldest request is forgotten (its later
   * spans still get the ID from baggage), so a span that is never ended cannot grow memory without bound.
   * @default 10000
   */
  maxTrackedRequests?: number;
}

/** The spans of one request in this service: the local root (the HTTP server span) and its descendants. */
interface RequestSpans {
  root: Span;
  correlationId: string | undefined;
  open: Map<string, Span>;
  /** Every span key ever mapped to this request, so a child of an ended span still finds it. */
  members: string[];
}

/**
 * Stamps `idempotency.correlation_id` on every span of a request, including the spans that started
 * before the middleware knew the ID. Register it with the SDK before the exporting processor:
 *
 * - a span started with the ID in its parent context's baggage (set by the middleware, or by an
 *   upstream service) is stamped in `onStart`;
 * - the spans already open when the middleware learns the ID (the HTTP server span, outer Koa
 *   middleware spans) are stamped then, because the processor tracks the open spans of each request;
 * - a span started later outside the baggage (an outer middleware after `await next()`) is stamped
 *   from its request's ID.
 *
 * A "request" is a local root span (no parent, or a remote parent) and its local descendants. Spans
 * that ended before the middleware ran (a query in an authentication middleware) cannot be changed.
 *
 * It implements the SDK's `SpanProcessor` structurally, so the library depends on `@opentelemetry/api` only.
 */
export class CorrelationSpanProcessor implements RequestStamper {
  readonly #maxTrackedRequests: number;
  /** Keyed by the local root's span key, oldest first (Map keeps insertion order). */
  readonly #requests = new Map<string, RequestSpans>();
  readonly #requestOfSpan = new Map<string, RequestSpans>();

  constructor(options: CorrelationSpanProcessorOptions = {}) {
    const max = options.maxTrackedRequests ?? DEFAULT_MAX_TRACKED_REQUESTS;
    if (!Number.isInteger(max) || max < 1) throw new TypeError(`maxTrackedRequests must be an integer >= 1; got ${max}`);
    this.#maxTrackedRequests = max;
    registerStamper(this);
  }

  onStart(span: Span, parentContext: OtelContext): void {
    const key = spanKey(span.spanContext());
    const request = this.#requestOfParent(parentContext) ?? this.#newRequest(key, span);
    request.open.set(key, span);
    request.members.push(key);
    this.#requestOfSpan.set(key, request);
    const correlationId = upstreamCorrelationId(parentContext) ?? request.correlationId;
    if (correlationId === undefined) return;
    request.correlationId ??= correlationId;
    span.setAttribute(ATTR.CORRELATION_ID, correlationId);
  }

  onEnd(span: { spanContext(): SpanContext }): void {
    const key = spanKey(span.spanContext());
    const request = this.#requestOfSpan.get(key);
    if (!request) return;
    request.open.delete(key);
    if (request.open.size === 0) this.#forget(request);
  }

  /** Called by the middleware: stamps the open spans of the request that `active` belongs to. */
  stamp(active: SpanContext, correlationId: string): void {
    const request = this.#requestOfSpan.get(spanKey(active));
    if (!request) return;
    request.correlationId = correlationId;
    for (const span of request.open.values()) span.setAttribute(ATTR.CORRELATION_ID, correlationId);
  }

  /** The local root (server) span of the request that `active` belongs to, while it is open. */
  requestSpan(active: SpanContext): Span | undefined {
    const request = this.#requestOfSpan.get(spanKey(active));
    return request && request.open.has(spanKey(request.root.spanContext())) ? request.root : undefined;
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    unregisterStamper(this);
    this.#requests.clear();
    this.#requestOfSpan.clear();
    return Promise.resolve();
  }

  /** The request of the parent span when it is a local one we track; a remote parent starts a request. */
  #requestOfParent(parentContext: OtelContext): RequestSpans | undefined {
    const parent = trace.getSpanContext(parentContext);
    if (!parent || parent.isRemote || !trace.isSpanContextValid(parent)) return undefined;
    return this.#requestOfSpan.get(spanKey(parent));
  }

  #newRequest(key: string, root: Span): RequestSpans {
    const request: RequestSpans = { root, correlationId: undefined, open: new Map(), members: [] };
    this.#requests.set(key, request);
    if (this.#requests.size > this.#maxTrackedRequests) {
      const oldest = this.#requests.values().next().value;
      if (oldest) this.#forget(oldest);
    }
    return request;
  }

  #forget(request: RequestSpans): void {
    this.#requests.delete(spanKey(request.root.spanContext()));
    for (const key of request.members) this.#requestOfSpan.delete(key);
  }
}

function spanKey(spanContext: SpanContext): string {
  return `${spanContext.traceId}-${spanContext.spanId}`;
}
