import { sqlstateOf } from '../error-code.js';
import { IdempotencyError } from '../errors.js';

/** SQLSTATE in_failed_sql_transaction: a statement failed earlier in the transaction and no savepoint caught it. */
const IN_FAILED_SQL_TRANSACTION = '25P02';

/**
 * A transactional completion failed before its COMMIT was sent, and the transaction was rolled back:
 * nothing committed, the key is free again. Unlike a failed or lost COMMIT, the outcome is known, so
 * the middleware need not answer "could not be confirmed".
 */
export class CompletionRolledBackError extends IdempotencyError {
  override name = 'CompletionRolledBackError';
  override readonly code = 'COMPLETION_ROLLED_BACK';
  /**
   * The handler left the transaction aborted: it caught a failed statement without a savepoint. A fault
   * of the request, not of the store: retrying later does not help unless the handler behaves otherwise.
   */
  readonly transactionAborted: boolean;

  constructor(cause: unknown) {
    super('The completion failed before COMMIT, so the transaction was rolled back and nothing was committed.', { cause });
    this.transactionAborted = sqlstateOf(cause) === IN_FAILED_SQL_TRANSACTION;
  }
}
