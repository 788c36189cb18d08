import { trace, type Context as OtelContext, type Span, type SpanContext } from '@opentelemetry/api';

/**
 * The seam between the middleware and the span processors the application registered
 * (`CorrelationSpanProcessor`). The middleware learns the correlation ID only once it has read the key,
 * after the server span and the outer middleware spans started; through this seam it asks the
 * processors, which know the open spans of each request, to stamp them. Without a processor, only the
 * active span is stamped (by the request telemetry itself).
 */
export interface RequestStamper {
  /** `activeSpan` is the active Span object when the context holds one: it finds the request of an ended span. */
  stamp(active: SpanContext, correlationId: string, activeSpan?: Span): void;
  requestSpan(active: SpanContext, activeSpan?: Span): Span | undefined;
}

/**
 * Kept on `globalThis` under a registered symbol (as the OpenTelemetry API keeps its own globals), so a
 * processor and a middleware from two copies of this package in one process still find each other.
 */
const STAMPERS = Symbol.for('koa-idempotency.request-stampers');
const stampers: Set<RequestStamper> = ((globalThis as { [STAMPERS]?: Set<RequestStamper> })[STAMPERS] ??= new Set());

export function registerStamper(stamper: RequestStamper): void {
  stampers.add(stamper);
}

export function unregisterStamper(stamper: RequestStamper): void {
  stampers.delete(stamper);
}

/** Stamps the correlation ID on every open span of the request the active span belongs to. */
export function stampActiveRequest(active: OtelContext, correlationId: string): void {
  const spanContext = trace.getSpanContext(active);
  if (!spanContext) return;
  const span = trace.getSpan(active);
  for (const stamper of stampers) stamper.stamp(spanContext, correlationId, span);
}

/**
 * The span that stands for the whole request in this service (the HTTP server span), which carries the
 * outcome, events and links; the active span when no processor knows it (e.g. no processor registered).
 */
export function requestSpanOf(active: OtelContext): Span | undefined {
  const spanContext = trace.getSpanContext(active);
  const activeSpan = trace.getSpan(active);
  if (spanContext) {
    for (const stamper of stampers) {
      const span = stamper.requestSpan(spanContext, activeSpan);
      if (span) return span;
    }
  }
  return activeSpan;
}
