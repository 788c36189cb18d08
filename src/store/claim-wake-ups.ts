import { diag } from '@opentelemetry/api';
import type { TransactionalClaim } from './types.js';

type Claimed = Extract<TransactionalClaim, { kind: 'claimed' }>;

/**
 * Wakes the key's waiters whenever a transactional claim ends other than by a successful COMMIT, which
 * notifies by itself: a rollback sends no notification, and a failed COMMIT (a deferred constraint) or
 * ROLLBACK (a lost connection) discards the one the completion had queued. Without this, a waiter of the
 * key would only learn of the free key by its own re-reads.
 */
export function wakingWaitersAtTheEnd(claim: Claimed, notifyWaiters: () => Promise<unknown>): Claimed {
  const wake = () => notifyWaiters().catch((error: unknown) => diag.warn('koa-idempotency: waking the waiters of a claim that ended without a commit failed', error));
  return {
    ...claim,
    commit: async (completion) => {
      try {
        await claim.commit(completion);
      } catch (error) {
        await wake();
        throw error;
      }
    },
    rollback: async () => {
      try {
        await claim.rollback();
      } finally {
        await wake();
      }
    },
  };
}
