import type { ChangeWatch, ClaimRequest, IdempotencyStore, TransactionalClaim } from '../store/types.js';
import type { StoreCapabilities } from './options.js';

/**
 * What a group of cases receives: the store's capabilities and a way to register a case. A case gets the
 * store and a place to defer its cleanup, so that a case failing half-way leaves no transaction open (on a
 * one-connection store that would block every later case) and no watcher registered.
 */

export interface CaseScope {
  store: IdempotencyStore;
  /** Runs `cleanup` when the case ends, passed or failed (last deferred, first run; its errors are ignored). */
  defer: (cleanup: () => unknown) => void;
}

export interface CaseContext {
  capabilities: StoreCapabilities;
  /**
   * Registers one case. `waitsMs` is the time the case spends waiting on purpose (leases and TTLs running
   * out, timeouts), added to the case's bound.
   */
  test: (name: string, run: (scope: CaseScope) => Promise<void>, waitsMs?: number) => void;
}

type ClaimedTransaction = Extract<TransactionalClaim, { kind: 'claimed' }>;

/**
 * claimInTransaction(), whose transaction (when it claims) is rolled back at the end of the case unless the
 * case committed or rolled it back.
 */
export async function claimInTransaction(scope: CaseScope, request: ClaimRequest): Promise<TransactionalClaim> {
  const claim = await scope.store.claimInTransaction({ ...request });
  return claim.kind === 'claimed' ? guardTransaction(claim, scope) : claim;
}

function guardTransaction(claim: ClaimedTransaction, scope: CaseScope): ClaimedTransaction {
  let ended = false;
  scope.defer(() => (ended ? undefined : claim.rollback()));
  return {
    ...claim,
    commit: (completion) => {
      ended = true;
      return claim.commit(completion);
    },
    rollback: () => {
      ended = true;
      return claim.rollback();
    },
  };
}

/** Registers a watch closed at the end of the case unless the case closed it itself. */
export async function trackedWatch(scope: CaseScope, scopeName: string, key: string): Promise<ChangeWatch> {
  const watch = await scope.store.watch(scopeName, key);
  let closed = false;
  scope.defer(() => (closed ? undefined : watch.close()));
  return {
    next: (timeoutMs) => watch.next(timeoutMs),
    close: () => {
      closed = true;
      watch.close();
    },
  };
}
