import { setTimeout as sleep } from 'node:timers/promises';
import { diag } from '@opentelemetry/api';
import type { ChangeWatch, ClaimRequest } from '../store/types.js';
import { OUTCOME } from '../telemetry/names.js';
import type { StoreClaim } from './claim.js';
import { isSameRequest } from './claim-request.js';
import type { ResolvedOptions } from './resolved-options.js';
import type { RequestTelemetry } from './request-telemetry.js';

/** The request that claims: its claim, its options and telemetry, and a signal of its client leaving. */
export interface ClaimAttempt<C extends StoreClaim> {
  readonly request: ClaimRequest;
  readonly config: ResolvedOptions;
  readonly telemetry: RequestTelemetry;
  claimOnce(): Promise<C>;
  /** Aborts when the client's connection closes before its response was sent (asked for only by a waiter). */
  clientGone(): AbortSignal;
}

/** The first pause between two re-reads of a waiting duplicate; each next one doubles, up to `waitRecheckMs`. */
const FIRST_RECHECK_MS = 25;

/**
 * `onInProgress: 'wait'`: holds a duplicate of a request still in progress until that request completes (or
 * is released), then returns the claim as it stands: usually the completed record to replay. The watch is
 * registered before each re-read, so a completion that lands in between wakes the waiter instead of being
 * missed. It waits until `waitMs` or until the client goes away: a waiter whose client left would otherwise
 * hold its announcement, and could take the key over and run the handler for nobody.
 */
export async function waitForTurn<C extends StoreClaim>(attempt: ClaimAttempt<C>): Promise<C> {
  const { request, config, telemetry } = attempt;
  const gone = attempt.clientGone();
  const startedMs = performance.now();
  const leaving = new Promise<'gone'>((resolve) => gone.addEventListener('abort', () => resolve('gone'), { once: true }));
  const deadlineMs = startedMs + config.waitMs;
  const watch = await watchWithin(config.store.watch(request.scope, request.key), Math.min(config.waitRecheckMs, config.waitMs));
  try {
    let current = await attempt.claimOnce();
    // The store's notification only hastens the wake-up: a waiter also re-reads on this schedule, so a
    // notification that never comes (a lost connection, a failed COMMIT) delays it by one pause at most.
    for (let pauseMs = Math.min(FIRST_RECHECK_MS, config.waitRecheckMs); isInProgress(current, request); pauseMs = Math.min(2 * pauseMs, config.waitRecheckMs)) {
      const remainingMs = deadlineMs - performance.now();
      if (remainingMs <= 0 || gone.aborted) break;
      const woken = await Promise.race([watch.next(Math.min(remainingMs, untilLeaseLapses(current, pauseMs))), leaving]);
      if (woken === 'gone') break;
      current = await attempt.claimOnce();
      if (woken === 'changed') current = await settleAfterCommit(attempt, current);
    }
    const settled = isInProgress(current, request) ? OUTCOME.IN_PROGRESS : current.kind === 'claimed' ? OUTCOME.EXECUTED : OUTCOME.REPLAYED;
    telemetry.waited((performance.now() - startedMs) / 1000, settled);
    return current;
  } finally {
    watch.close();
  }
}

/**
 * The store's watch, waited for `timeoutMs` at most: registering it takes a statement on the listening
 * connection, and a connection gone silent (half-open behind a NAT, no error ever raised) held every waiter
 * of the process past its `waitMs`. Until a late watch arrives the waiter re-reads on its schedule alone; a
 * watch that arrives after the waiter is done is closed at once, and one that fails leaves it to re-read.
 */
async function watchWithin(pending: Promise<ChangeWatch>, timeoutMs: number): Promise<ChangeWatch> {
  let watch: ChangeWatch | undefined;
  let closed = false;
  pending.then(
    (arrived) => (closed ? arrived.close() : (watch = arrived)),
    (error: unknown) => diag.warn('koa-idempotency: a waiting duplicate could not watch its key; it re-reads on its schedule', error),
  );
  const timer = new AbortController();
  await Promise.race([pending.catch(() => undefined), sleep(timeoutMs, undefined, { signal: timer.signal }).catch(() => undefined)]);
  timer.abort();
  return {
    next: (pauseMs) => (watch ? watch.next(pauseMs) : sleep(pauseMs).then(() => 'timeout' as const)),
    close: () => {
      closed = true;
      watch?.close();
    },
  };
}

/**
 * Postgres sends a transaction's notifications a moment before it releases that transaction's locks,
 * so a waiter woken by the commit can still find the key's advisory lock held (a `busy` claim). A few
 * short, growing pauses (5, 10, 20, 40 ms) bridge that gap; this runs only after a notification, never
 * as polling.
 */
async function settleAfterCommit<C extends StoreClaim>(attempt: ClaimAttempt<C>, current: C): Promise<C> {
  for (let pauseMs = 5; current.kind === 'busy' && pauseMs <= 40; pauseMs *= 2) {
    await sleep(pauseMs);
    current = await attempt.claimOnce();
  }
  return current;
}

/**
 * The pause, cut to the owner's remaining lease: a crashed owner's key is taken over as soon as its lease
 * lapses (the re-read's claim does it), not a pause later. A `busy` claim shows no lease, and a lapsed one
 * that the claim did not take over (a record of another fingerprint version) keeps the whole pause.
 */
function untilLeaseLapses(claim: StoreClaim, pauseMs: number): number {
  if (claim.kind !== 'existing' || claim.record.leaseRemainingMs <= 0) return pauseMs;
  return Math.min(pauseMs, Math.ceil(claim.record.leaseRemainingMs));
}

/**
 * A duplicate of a request still in progress elsewhere: the store's `busy` claim (another transaction holds
 * the key) or an in-progress record of the same request. A reused key is answered at once, never waited for.
 */
export function isInProgress(claim: StoreClaim, request: ClaimRequest): boolean {
  if (claim.kind === 'busy') return true;
  return claim.kind === 'existing' && claim.record.status === 'in_progress' && isSameRequest(claim.record, request.fingerprint);
}
