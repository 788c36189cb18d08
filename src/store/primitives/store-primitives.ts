import { announceWaiter, withdrawWaiter, type AnnounceWaiter, type WithdrawWaiter } from './waiter-announcement.js';
import { claim, type FullClaim } from './claim.js';
import { claimInTransaction } from './claim-in-transaction.js';
import { claimNew, type ClaimNew } from './claim-new.js';
import { complete, type Complete } from './complete.js';
import { find, type Find } from './find.js';
import { findByCorrelationTag, type FindByCorrelationTag } from './find-by-correlation-tag.js';
import { forget, type Forget } from './forget.js';
import { notifyWaiters, type NotifyWaiters } from './notify-waiters.js';
import { release, type Release } from './release.js';
import { renewLease, type RenewLease } from './renew-lease.js';
import { saveStep, type SaveStep } from './save-step.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';
import { stats, type Stats } from './stats.js';
import { sweep, type SweepBatch } from './sweep.js';

/**
 * Every primitive of a store, built once per store: each one statement, in a file of its own with its values
 * and what it reads back. These run as named prepared statements on a pool (see preparedStatements).
 */
export interface StorePrimitives {
  /** Undefined on a partitioned table, whose claim function keeps keys unique. */
  claimNew: ClaimNew | undefined;
  claimNewInTransaction: ClaimNew | undefined;
  claim: FullClaim;
  claimInTransaction: FullClaim;
  complete: Complete;
  completeInClaimTransaction: Complete;
  release: Release;
  renewLease: RenewLease;
  saveStep: SaveStep;
  notifyWaiters: NotifyWaiters;
  announceWaiter: AnnounceWaiter;
  withdrawWaiter: WithdrawWaiter;
  find: Find;
  sweep: SweepBatch;
  /** `sweep` without row locks, for a table distributed by Citus (see sweep.ts). */
  sweepWithoutLocks: SweepBatch;
  stats: Stats;
}

export function storePrimitives(options: PrimitiveOptions): StorePrimitives {
  return {
    claimNew: claimNew(options, false),
    claimNewInTransaction: claimNew(options, true),
    claim: claim(options),
    claimInTransaction: claimInTransaction(options),
    complete: complete(options, false),
    completeInClaimTransaction: complete(options, true),
    release: release(options),
    renewLease: renewLease(options),
    saveStep: saveStep(options),
    notifyWaiters: notifyWaiters(options),
    announceWaiter: announceWaiter(options),
    withdrawWaiter: withdrawWaiter(options),
    find: find(options),
    sweep: sweep(options, true),
    sweepWithoutLocks: sweep(options, false),
    stats: stats(options),
  };
}

/** The statements to prepare on each connection of a pool: every primitive of the store. */
export function preparedStatements(primitives: StorePrimitives): NamedStatement[] {
  const byName: Record<keyof StorePrimitives, NamedStatement | undefined> = primitives;
  return Object.values(byName).filter((primitive) => primitive !== undefined);
}

/**
 * The operator's primitives (`koa-idempotency inspect --instance`, `forget`): not part of the store contract,
 * never on a request's path, run unnamed (a prepared statement stays on its connection for the connection's life).
 */
export interface OperatorPrimitives {
  forget: Forget;
  findByCorrelationTag: FindByCorrelationTag;
}

export function operatorPrimitives(options: PrimitiveOptions): OperatorPrimitives {
  return { forget: forget(options), findByCorrelationTag: findByCorrelationTag(options) };
}
