import { type IdempotencyContext } from '../../src/index.js';
import { idempotentFetch, IdempotentFetchError } from '../../src/entries/client.js';

/**
 * Budget of the whole ledger call, retries included. The payments request (and, in transactional mode, its
 * claim's transaction) waits for it, so it stays well below the end client's own patience; past it the
 * payment answers 503 and the end client retries with the same key.
 */
export const LEDGER_DEADLINE_MS = 5_000;
/** One attempt: a ledger that is up answers in milliseconds; a silent one is given up on and retried. */
export const LEDGER_ATTEMPT_TIMEOUT_MS = 2_000;
/** A restart or a dropped connection costs a retry or two; more would only hold the payment longer. */
export const LEDGER_MAX_ATTEMPTS = 4;
/** What the ledger call is, for the derived key: one ledger entry per payment key. */
export const LEDGER_KEY_LABEL = 'ledger-entry';

export type LedgerBooking = { booked: true; entryId: string; attempts: number; replayed: boolean } | { booked: false; reason: string };

/**
 * Books the payment's ledger entry over HTTP with `idempotentFetch`. The `Idempotency-Key` is derived from
 * the payment's own key (`ctx.idempotency.deriveKey('ledger-entry')`), so every attempt of this call, and
 * every call made by a retry of the payment, books the same entry: a ledger that drops the first attempts
 * costs the end client latency only. Trace context and baggage (the correlation ID) are added to each
 * attempt by the HTTP instrumentation of `fetch`.
 */
export async function bookLedgerEntry(
  ledgerUrl: string,
  account: string,
  idempotency: IdempotencyContext,
  entry: { amount: number; currency: string },
): Promise<LedgerBooking> {
  try {
    const result = await idempotentFetch(
      new URL('/entries', ledgerUrl),
      { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${account}` }, body: JSON.stringify(entry) },
      {
        key: { from: idempotency, label: LEDGER_KEY_LABEL },
        deadlineMs: LEDGER_DEADLINE_MS,
        attemptTimeoutMs: LEDGER_ATTEMPT_TIMEOUT_MS,
        maxAttempts: LEDGER_MAX_ATTEMPTS,
      },
    );
    const body = (await result.response.json().catch(() => undefined)) as { id?: unknown } | undefined;
    if (result.status === 201 && typeof body?.id === 'string') {
      return { booked: true, entryId: body.id, attempts: result.attempts, replayed: result.replayed };
    }
    const problem = result.problem ? ` (${result.problem.type})` : '';
    return { booked: false, reason: `the ledger answered ${result.status}${problem} after ${result.attempts} attempt(s)` };
  } catch (error) {
    if (error instanceof IdempotentFetchError) {
      return { booked: false, reason: `the ledger could not be reached in ${error.attempts} attempt(s)` };
    }
    throw error;
  }
}
