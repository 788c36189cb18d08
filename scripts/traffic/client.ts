/**
 * One HTTP exchange with the payments example, reduced to what the outcome table needs. Every request
 * has a deadline, so a stuck server can never hang the generator.
 */

export const REQUEST_TIMEOUT_MS = 10_000;
/** Longest pause honoured from a Retry-After header: the demo keeps moving. */
export const MAX_RETRY_DELAY_MS = 2_000;
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

export async function postPayment(baseUrl: string, payment: PaymentRequest, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Answer> {
  try {
    const response = await fetch(new URL('/payments', baseUrl), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${payment.account}`,
        'idempotency-key': payment.key,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ amount: payment.amount, currency: payment.currency }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.arrayBuffer(); // drain, so the connection is reused
    return {
      kind: 'response',
      status: response.status,
      replayed: response.headers.get(REPLAYED_HEADER) === 'true',
      retryAfterMs: retryAfterMs(response.headers.get('retry-after')),
    };
  } catch (error) {
    if (error instanceof DOMException && error.name === 'TimeoutError') return { kind: 'timeout' };
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return { kind: 'network-error', message: cause?.code ?? cause?.message ?? (error as Error).message };
  }
}

function retryAfterMs(header: string | null): number | undefined {
  if (header === null || !/^\d+$/.test(header)) return undefined;
  return Math.min(Number(header) * 1_000, MAX_RETRY_DELAY_MS);
}
