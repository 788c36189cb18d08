import type { SqlQueryable, SqlResult } from './sql-database.js';
import { handlerStatementError, TransactionControlError } from './transaction-control.js';

/**
 * What a transactional handler gets as `ctx.idempotency.db`: the right to run statements in the claim's
 * transaction, not the transaction, nor its connection. Handing out the transaction itself let a handler
 * `commit()` the claim with half its writes (a retry then ran the operation a second time), and handing out
 * the pooled client let `release()` return it to the pool with the claim still open, or a kept reference run
 * inside another request's transaction. So only `query()` works; the rest is refused, and the whole capability
 * is revoked the moment the claim ends.
 */
export interface TransactionalDb extends SqlQueryable {
  /**
   * Runs one statement in the claim's transaction (a text of several is refused by Postgres). Rejects with a
   * TransactionControlError for BEGIN, COMMIT, ROLLBACK and the like (nest with SAVEPOINT / ROLLBACK TO
   * SAVEPOINT instead), for statements that change the session (SET without LOCAL, RESET, DISCARD,
   * DEALLOCATE, LISTEN, UNLISTEN, LOAD, PREPARE), and for any call once the claim has ended.
   */
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<SqlResult<Row>>;
  /** Refused: the middleware commits the handler's writes together with the stored response. Throws a TransactionControlError. */
  commit(): never;
  /** Refused: throw from the handler (or answer a 5xx) to roll everything back. Throws a TransactionControlError. */
  rollback(): never;
  /** Refused: the connection is the middleware's to hand back to the pool, after the claim ends. Throws a TransactionControlError. */
  release(): never;
}

/** A capability and the means to revoke it, which its holder does not get. */
export interface RevocableTransactionalDb {
  db: TransactionalDb;
  /** Every later call of `db` rejects, saying that the claim ended and how (`at its commit`, `at its rollback`). */
  revoke(how: string): void;
}

/** The capability over `tx`, the claim's open transaction. */
export function transactionalDb(tx: SqlQueryable): RevocableTransactionalDb {
  let endedHow: string | undefined;
  const db: TransactionalDb = Object.freeze({
    async query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
      if (endedHow !== undefined) throw revoked(endedHow);
      const refused = handlerStatementError(text);
      if (refused) throw refused;
      return tx.query<Row>(text, params);
    },
    // Thrown, not returned as a rejected promise: a call nobody awaits must still fail the handler, not end
    // as an unhandled rejection.
    commit: () => refuse('commit()', 'the middleware commits them together with the stored response once the handler has answered'),
    rollback: () => refuse('rollback()', 'throw from the handler, or answer a 5xx, and the middleware rolls everything back'),
    release: () => refuse('release()', 'the connection goes back to the pool when the claim ends; a query builder adapter must not release it'),
  });
  return {
    db,
    revoke: (how) => {
      endedHow ??= how;
    },
  };
}

function refuse(method: string, instead: string): never {
  throw new TransactionControlError(
    `ctx.idempotency.db.${method} is refused: the claim, the handler's writes and the stored response share one transaction, ` +
      `and only the middleware ends it (${instead}).`,
  );
}

function revoked(how: string): TransactionControlError {
  return new TransactionControlError(
    `ctx.idempotency.db was used after the idempotency claim's transaction ended ${how}: it runs statements for the handler ` +
      'of its own request only, while that request holds the claim. Do not keep it past the handler.',
  );
}
