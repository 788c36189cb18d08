import { sqlstateOf } from '../error-code.js';
import { FencedError } from '../errors.js';
import { timeStoreOperation } from '../telemetry/metrics.js';
import { OPERATION } from '../telemetry/names.js';
import { commitFailure, CompletionRolledBackError } from './completion-rolled-back.js';
import { NOTHING_COMPLETED, type Complete } from './primitives/complete.js';
import type { SqlQueryable, SqlTransaction } from './sql-database.js';
import { claimTransactionEnded, isClaimTransaction, TransactionControlError } from './transaction-control.js';
import { transactionalDb } from './transactional-db.js';
import type { IdempotencyRecord, Lease, TransactionalClaim } from './types.js';

export interface ClaimTransactionParts {
  /** The claim's open transaction, marked with `mark` (see openClaimTransaction). */
  tx: SqlTransaction;
  mark: string;
  lease: Lease;
  record: IdempotencyRecord;
  /** Completes the owned record, on the pool: the record of a handler that ended the claim's transaction itself. */
  complete: Complete;
  /**
   * Completes the owned record only while the claim's transaction is open (its mark); a pipelined transaction
   * sends it with the COMMIT. It fails (SQLSTATE NOTHING_COMPLETED) instead of completing nothing.
   */
  completeInClaimTransaction: Complete;
  /** The pool, outside the claim's transaction. */
  db: SqlQueryable;
}

/**
 * A claim held in its own transaction: the handler writes through `db`, then either `commit()` stores the
 * completion and commits everything at once, or `rollback()` undoes the claim with every write. `db` is a
 * capability revoked as either begins, so a handle the handler kept cannot run in a later transaction of the
 * connection. A handler that ended the transaction itself is detected at either end, and its record kept as executed.
 */
export function claimedTransaction(parts: ClaimTransactionParts): Extract<TransactionalClaim, { kind: 'claimed' }> {
  const { tx, mark, lease } = parts;
  const handlerDb = transactionalDb(tx);
  /**
   * The handler committed the claim early, and its writes with it: keep the record as executed, not
   * replayable, so that a retry answers 409 instead of running the operation a second time (a takeover
   * once the lease ran out).
   */
  const keepAsExecuted = (status: number) => parts.complete.run(parts.db, lease, { replayable: false, status }).catch(() => undefined);

  return {
    kind: 'claimed',
    lease,
    record: parts.record,
    db: handlerDb.db,
    commit: async (completion) => {
      handlerDb.revoke('at its commit');
      // Until COMMIT is sent, a failure ends in a rollback: a known outcome, unlike a lost COMMIT (see commitFailure).
      let committing = false;
      await timeStoreOperation(OPERATION.COMPLETE, async () => {
        if (tx.commitAfter) {
          const statement = parts.completeInClaimTransaction;
          const outcome = await tx.commitAfter(statement.text, statement.values(lease, completion, mark)).catch((error: unknown) => {
            committing = true;
            throw error;
          });
          if (outcome.committed) return;
          const fenced = sqlstateOf(outcome.error) === NOTHING_COMPLETED;
          // No transaction open when it ran: the handler ended the claim's (see below).
          if (fenced && !outcome.transactionWasOpen) {
            await keepAsExecuted(completion.replayable ? completion.response.status : completion.status);
            throw claimTransactionEnded();
          }
          throw fenced ? new FencedError(lease.fence) : outcome.error;
        }
        try {
          await parts.completeInClaimTransaction.run(tx, lease, completion, mark);
        } catch (error) {
          // No record updated: fenced, or the claim's transaction ended early (the statement only finds the
          // record while its mark is set), in which case a completion alone would be a replayable success for
          // half an operation. Told apart here, off the path of a completion that succeeds.
          const ended = error instanceof FencedError && !(await isClaimTransaction(tx, mark).catch(() => true));
          await tx.rollback().catch(() => undefined);
          if (!ended) throw error;
          await keepAsExecuted(completion.replayable ? completion.response.status : completion.status);
          throw claimTransactionEnded();
        }
        committing = true;
        await tx.commit();
      }).catch((error: unknown) => {
        if (committing) throw commitFailure(error);
        // A TransactionControlError is no rollback: the handler committed its writes early (see there).
        throw error instanceof TransactionControlError ? error : new CompletionRolledBackError(error);
      });
    },
    rollback: async () => {
      handlerDb.revoke('at its rollback');
      await timeStoreOperation(OPERATION.ROLLBACK, async () => {
        // A check that fails finds the claim's transaction aborted by a failed statement: still open.
        const ended = !(await isClaimTransaction(tx, mark).catch(() => true));
        await tx.rollback();
        if (!ended) return;
        await keepAsExecuted(500);
        throw claimTransactionEnded();
      });
    },
  };
}
