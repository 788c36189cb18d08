import { idempotentFetch, IdempotentFetchError, type AttemptRecord, type IdempotentFetchOptions } from '../../src/entries/client.js';
import { parseRetryAfterMs } from '../../src/client/retry-after.js';

/**
 * One HTTP exchange with the payments example, reduced to what the outcome table needs. Every request
 * has a deadline, so a stuck server can never hang the generator.
 */

export const REQUEST_TIMEOUT_MS = 10_000;
/**
 * How the generator's retrying client retries: as a service client using the library's `idempotentFetch`
 * (same key every time, backoff with full jitter, Retry-After honoured, 409 request-in-progress waited out),
 * with a shorter total deadline than the library's default so the demo keeps moving.
 */
export const RETRY_MAX_ATTEMPTS = 5;
export const RETRY_BASE_DELAY_MS = 100;
export const RETRY_MAX_DELAY_MS = 2_000;
export const RETRY_DEADLINE_MS = 20_000;
const REPLAYED_HEADER = 'idempotent-replayed';

export interface PaymentRequest {
  account: string;
  key: string;
  amount: number;
  currency: string;
}

export type Answer =
  | { kind: 'response'; status: number; replayed: boolean; retryAfterMs: number | undefined }
  /** The client gave up waiting (a simulated timeout); the server may still have run the request. */
  | { kind: 'timeout' }
  /** No HTTP answer at all (connection refused or reset). */
  | { kind: 'network-error'; message: string };

function paymentRequest(payment: PaymentRequest): RequestInit {
  return {
    method: 'POST',
    headers: { authorization: `Bearer ${payment.account}`, 'idempotency-key': payment.key, 'content-type': 'application/json' },
    body: JSON.stringify({ amount: payment.amount, currency: payment.currency }),
  };
}

/** One attempt, as a client that does not retry by itself sends it. */
export async function postPayment(baseUrl: string, payment: PaymentRequest, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Answer> {
  try {
    const response = await fetch(new URL('/payments', baseUrl), { ...paymentRequest(payment), signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer(); // drain, so the connection is reused
    return {
      kind: 'response',
      status: response.status,
      replayed: response.headers.get(REPLAYED_HEADER) === 'true',
      retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after')),
    };
  } catch (error) {
    if (error instanceof DOMException && error.name === 'TimeoutError') return { kind: 'timeout' };
    return { kind: 'network-error', message: networkErrorMessage(error) };
  }
}

/**
 * The payment sent by a retrying client (`idempotentFetch` with the payment's key) until it gets a final
 * answer or gives up; `onAttempt` gets every attempt's answer, so each one is counted like any request.
 * Returns the last answer.
 */
export async function postPaymentRetrying(baseUrl: string, payment: PaymentRequest, onAttempt: (answer: Answer) => void): Promise<Answer> {
  const options: IdempotentFetchOptions = {
    key: payment.key,
    maxAttempts: RETRY_MAX_ATTEMPTS,
    baseDelayMs: RETRY_BASE_DELAY_MS,
    maxDelayMs: RETRY_MAX_DELAY_MS,
    deadlineMs: RETRY_DEADLINE_MS,
    attemptTimeoutMs: REQUEST_TIMEOUT_MS,
    onAttempt: (attempt) => onAttempt(answerOf(attempt)),
  };
  try {
    const result = await idempotentFetch(new URL('/payments', baseUrl), paymentRequest(payment), options);
    await result.response.arrayBuffer(); // drain, so the connection is reused
    return answerOf(result.history.at(-1)!);
  } catch (error) {
    if (error instanceof IdempotentFetchError) return answerOf(error.history.at(-1)!);
    return { kind: 'network-error', message: networkErrorMessage(error) };
  }
}

function answerOf(attempt: AttemptRecord): Answer {
  if (attempt.failure === 'timeout') return { kind: 'timeout' };
  if (attempt.failure === 'network-error') return { kind: 'network-error', message: networkErrorMessage(attempt.error) };
  return { kind: 'response', status: attempt.status!, replayed: attempt.replayed, retryAfterMs: attempt.retryAfterMs };
}

function networkErrorMessage(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message;
}
