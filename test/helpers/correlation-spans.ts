import { SpanKind } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { ATTR } from '../../src/entries/otel.js';

/** The payment the span tests (test/telemetry-spans-*.test.ts) send, and who sends it. */
export const ACCOUNT = 'acct_telemetry';
export const PAYMENT = { amount: 1250, currency: 'EUR' };

/** The names of the spans that lack the correlation ID (or carry another one): must be empty. */
export function unstamped(spans: ReadableSpan[], correlationId: string): string[] {
  return spans.filter((span) => span.attributes[ATTR.CORRELATION_ID] !== correlationId).map((span) => `${span.name} (${SpanKind[span.kind]})`);
}
