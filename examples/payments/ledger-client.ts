import type { IdempotencyContext } from '../../src/index.js';

/** Longest wait for the ledger; a slow ledger becomes a 503 the client retries with the same key. */
export const LEDGER_TIMEOUT_MS = 5_000;

export type LedgerBooking = { booked: true; entryId: string } | { booked: false; reason: string };

/**
 * Books the payment's ledger entry over HTTP. The `Idempotency-Key` is derived from the payment's own key
 * (`ctx.idempotency.headers('ledger-entry')`): a retried payment sends the same key, so the ledger books
 * the entry once and replays its answer. Trace context and baggage (the correlation ID) are added by the
 * HTTP instrumentation of `fetch`.
 */
export async function bookLedgerEntry(
  ledgerUrl: string,
  account: string,
  idempotency: IdempotencyContext,
  entry: { amount: number; currency: string },
): Promise<LedgerBooking> {
  try {
    const response = await fetch(new URL('/entries', ledgerUrl), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${account}`, ...idempotency.headers('ledger-entry') },
      body: JSON.stringify(entry),
      signal: AbortSignal.timeout(LEDGER_TIMEOUT_MS),
    });
    const body = (await response.json().catch(() => undefined)) as { id?: unknown } | undefined;
    if (response.status === 201 && typeof body?.id === 'string') return { booked: true, entryId: body.id };
    return { booked: false, reason: `the ledger answered ${response.status}` };
  } catch (error) {
    return { booked: false, reason: `the ledger could not be reached (${(error as Error).name})` };
  }
}
