import { sqlstateOf } from '../error-code.js';
import { IdempotencyError } from '../errors.js';

/** SQLSTATE in_failed_sql_transaction: a statement failed earlier in the transaction and no savepoint caught it. */
const IN_FAILED_SQL_TRANSACTION = '25P02';

/**
 * SQLSTATE classes of a COMMIT failure whose outcome is unknown: the connection lost (08), the server shutting
 * down or the statement cancelled (57), an I/O or internal error (58, XX), resources exhausted (53); and an
 * error without a SQLSTATE (an answer that never came). Any other error is Postgres refusing the COMMIT and
 * rolling the transaction back, a known outcome: a deferred constraint (23), a serialization failure or
 * deadlock (40), a deferred constraint trigger raising its own error (P0001, 22…).
 */
const OUTCOME_UNKNOWN = ['08', '57', '58', 'XX', '53'];
const INTEGRITY_CONSTRAINT_VIOLATION = '23';
const TRANSACTION_ROLLBACK = '40';

/**
 * A transactional completion failed and the transaction was rolled back: nothing committed, the key is free
 * again. It failed before its COMMIT was sent, or Postgres answered the COMMIT with a rollback. Unlike a lost
 * COMMIT, the outcome is known, so the middleware need not answer "could not be confirmed".
 */
export class CompletionRolledBackError extends IdempotencyError {
  override name = 'CompletionRolledBackError';
  override readonly code = 'COMPLETION_ROLLED_BACK';
  /**
   * The handler left the transaction aborted: it caught a failed statement without a savepoint. A fault
   * of the request, not of the store: retrying later does not help unless the handler behaves otherwise.
   */
  readonly transactionAborted: boolean;
  /** The COMMIT was sent, and Postgres answered it by rolling the transaction back. */
  readonly atCommit: boolean;
  /**
   * A constraint failed the transaction (a deferred one, checked by COMMIT): a fault of the handler's writes,
   * which a retry of the same request repeats unless the data changed meanwhile.
   */
  readonly constraintViolated: boolean;
  /**
   * Postgres rolled the transaction back for a conflict with another (40: serialization failure, deadlock):
   * a retry later may well succeed, unlike after any other refusal of the COMMIT.
   */
  readonly conflicted: boolean;

  constructor(cause: unknown, { atCommit = false }: { atCommit?: boolean } = {}) {
    super(
      atCommit
        ? 'Postgres refused the COMMIT and rolled the transaction back, so nothing was committed.'
        : 'The completion failed before COMMIT, so the transaction was rolled back and nothing was committed.',
      { cause },
    );
    const sqlstate = sqlstateOf(cause);
    this.transactionAborted = sqlstate === IN_FAILED_SQL_TRANSACTION;
    this.atCommit = atCommit;
    this.constraintViolated = sqlstate?.startsWith(INTEGRITY_CONSTRAINT_VIOLATION) ?? false;
    this.conflicted = sqlstate?.startsWith(TRANSACTION_ROLLBACK) ?? false;
  }
}

/**
 * The failure of a COMMIT, told apart: a CompletionRolledBackError when Postgres answered it with a rollback,
 * else the error itself (the outcome is unknown: the retry finds out).
 */
export function commitFailure(error: unknown): unknown {
  const sqlstate = sqlstateOf(error);
  const rolledBack = sqlstate !== undefined && !OUTCOME_UNKNOWN.some((sqlClass) => sqlstate.startsWith(sqlClass));
  return rolledBack ? new CompletionRolledBackError(error, { atCommit: true }) : error;
}
