import { diag } from '@opentelemetry/api';
import { isSameRequest } from './duplicates.js';
import type { ResolvedOptions } from './options.js';
import type { ClaimRequest, ClaimResult, TransactionalClaim } from './store/types.js';
import { OUTCOME } from './telemetry/names.js';
import type { RequestTelemetry } from './telemetry/request-telemetry.js';

type AnyClaim = ClaimResult | TransactionalClaim;

/**
 * Claims the key and, in `'wait'` mode, holds a duplicate of a request still in progress until that
 * request completes (or is released), then returns the claim as it stands: usually the completed record
 * to replay. The watch is registered before each re-read, so a completion that lands in between wakes
 * the waiter instead of being missed. Store failures come back as `'unavailable'`: fail closed.
 */
export async function settleClaim<C extends AnyClaim>(
  claimOnce: () => Promise<C>,
  request: ClaimRequest,
  config: ResolvedOptions,
  telemetry: RequestTelemetry,
): Promise<C | 'unavailable'> {
  try {
    const first = await claimOnce();
    if (config.onInProgress !== 'wait' || !isPending(first, request)) return first;
    return await waitForTurn(claimOnce, request, config, telemetry);
  } catch (error) {
    diag.error('koa-idempotency: claim failed, answering 503', error);
    telemetry.storeFailure(error);
    return 'unavailable';
  }
}

async function waitForTurn<C extends AnyClaim>(
  claimOnce: () => Promise<C>,
  request: ClaimRequest,
  config: ResolvedOptions,
  telemetry: RequestTelemetry,
): Promise<C> {
  const startedMs = performance.now();
  const deadlineMs = startedMs + config.waitMs;
  const watch = await config.store.watch(request.scope, request.key);
  try {
    let current = await claimOnce();
    while (isPending(current, request)) {
      const remainingMs = deadlineMs - performance.now();
      if (remainingMs <= 0) break;
      await watch.next(remainingMs);
      current = await claimOnce();
    }
    const settled = isPending(current, request) ? OUTCOME.CONFLICT : current.kind === 'claimed' ? OUTCOME.EXECUTED : OUTCOME.REPLAYED;
    telemetry.waited((performance.now() - startedMs) / 1000, settled);
    return current;
  } finally {
    watch.close();
  }
}

/** Still running elsewhere, for the same request (a mismatch is answered at once, never waited for). */
function isPending(claim: AnyClaim, request: ClaimRequest): boolean {
  if (claim.kind === 'busy') return true;
  return claim.kind === 'existing' && claim.record.status === 'in_progress' && isSameRequest(claim.record, request.fingerprint);
}
