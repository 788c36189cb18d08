import { context, createContextKey, trace, type Attributes, type Context } from '@opentelemetry/api';

/**
 * OpenTelemetry for idempotentFetch, as the HTTP semantic conventions describe retries: every attempt is its
 * own HTTP client span, made in the caller's context (so the spans are siblings under the caller's span and
 * the active baggage, the correlation ID included, is propagated by the fetch instrumentation), and a resent
 * request's span carries `http.request.resend_count`.
 *
 * Those client spans are created by the fetch (undici) instrumentation, not by this library, which cannot
 * reach them. The documented way in is the instrumentation's `startSpanHook`, called in the context the
 * request was made in: each attempt runs in a context holding its resend count, and `resendCountAttributes`
 * reads it back:
 *
 *     new UndiciInstrumentation({ startSpanHook: resendCountAttributes })
 *
 * The attribute is then set at span creation, where samplers can see it. Each retry also adds an event to
 * the caller's span (the one that waited): `idempotency.client.retry`.
 */

/** The semantic-convention attribute (stable): the ordinal number of a resent request. */
export const HTTP_REQUEST_RESEND_COUNT = 'http.request.resend_count';

export const CLIENT_TELEMETRY = {
  /** Span event on the caller's span each time a call waits to retry. */
  RETRY_EVENT: 'idempotency.client.retry',
  /** Event attribute: the wait before the resend, in seconds. */
  RETRY_DELAY: 'idempotency.client.retry.delay',
  /** Event attribute: why the attempt is retried: its status (`503`), `timeout`, or the network error's code. */
  ERROR_TYPE: 'error.type',
} as const;

const RESEND_COUNT = createContextKey('koa-idempotency idempotentFetch resend count');

/** The caller's context with the resend count of the attempt about to be made. */
export function withResendCount(parent: Context, resendCount: number): Context {
  return parent.setValue(RESEND_COUNT, resendCount);
}

/**
 * `{ 'http.request.resend_count': n }` inside a resent attempt of idempotentFetch, else `{}` (the convention
 * sets it only on resends). Takes no argument, so it fits the undici instrumentation's `startSpanHook` as is.
 */
export function resendCountAttributes(): Attributes {
  const count = context.active().getValue(RESEND_COUNT);
  return typeof count === 'number' && count > 0 ? { [HTTP_REQUEST_RESEND_COUNT]: count } : {};
}

/** Marks the wait on the caller's span, so a trace shows why the next client span starts later. */
export function recordRetry(caller: Context, resendCount: number, delayMs: number, errorType: string): void {
  trace.getSpan(caller)?.addEvent(CLIENT_TELEMETRY.RETRY_EVENT, {
    [HTTP_REQUEST_RESEND_COUNT]: resendCount,
    [CLIENT_TELEMETRY.RETRY_DELAY]: delayMs / 1_000,
    [CLIENT_TELEMETRY.ERROR_TYPE]: errorType,
  });
}
