import { trace, type SpanContext } from '@opentelemetry/api';

/**
 * The W3C traceparent (version 00) of the request's span, stored with a claim so that a replay can link
 * to the original. Formatting and parsing live together so that what is stored always parses back.
 */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export function formatTraceparent(spanContext: SpanContext): string {
  // Trace flags are one byte, always two hex digits: flags of 0x10 or more once came out as three, and
  // the stored value no longer parsed, so the replay's link was silently lost.
  const flags = (spanContext.traceFlags & 0xff).toString(16).padStart(2, '0');
  return `00-${spanContext.traceId}-${spanContext.spanId}-${flags}`;
}

/** Parses a stored traceparent into a span context for a span link; every flag bit is kept as stored. */
export function parseTraceparent(value: string | null | undefined): SpanContext | undefined {
  const match = value ? TRACEPARENT.exec(value) : null;
  if (!match) return undefined;
  const spanContext: SpanContext = {
    traceId: match[1]!,
    spanId: match[2]!,
    traceFlags: Number.parseInt(match[3]!, 16),
    isRemote: true,
  };
  return trace.isSpanContextValid(spanContext) ? spanContext : undefined;
}
