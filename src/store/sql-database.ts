/**
 * The narrow SQL surface the store needs. A `pg.Pool` is adapted by `fromPgPool()` and an embedded
 * PGlite instance by `fromPGlite()`, so one store, one set of SQL statements and one test suite serve both.
 */

export interface SqlResult<Row> {
  rows: Row[];
  rowCount: number | null;
}

/** Anything that runs a parameterised statement: the pool, or the client of an open transaction. */
export interface SqlQueryable {
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<SqlResult<Row>>;
}

/**
 * A transaction on one dedicated connection. Exactly one of commit() or rollback() ends it: the built-in
 * adapters' `query()` refuses BEGIN, COMMIT, ROLLBACK and the like (savepoints are allowed), and the store
 * detects a transaction ended some other way when it completes the claim.
 */
export interface SqlTransaction extends SqlQueryable {
  commit(): Promise<void>;
  rollback(): Promise<void>;
  /**
   * True when the transaction's first text, if it has no parameters, may hold several statements (the built-in
   * adapters send it with BEGIN as one simple query). Without it, every text must be one statement (an adapter
   * that sends each by the extended protocol).
   */
  readonly severalStatementsFirst?: boolean;
  /**
   * Present when a statement sent before the previous one has answered goes out at once, in order
   * (node-postgres's `pipeline` mode): callers may then send several without waiting, to pay one round trip
   * for all, and the statements `send` sends synchronously go out in one network write. A failed statement
   * aborts the transaction, so those behind it fail too instead of running on their own.
   */
  sendTogether?<T>(send: () => T): T;
  /**
   * Pipelined transactions only: sends `text` and COMMIT behind it without waiting, one round trip for both.
   * A statement that fails has aborted the transaction and the COMMIT then rolls it back: resolves with
   * `committed: false`, its error, and whether a transaction was open when it ran. Rejects when the COMMIT
   * itself failed (whether it took effect is then unknown). The transaction is over either way.
   */
  commitAfter?<Row = Record<string, unknown>>(text: string, params: unknown[]): Promise<CommitAfterOutcome<Row>>;
}

export type CommitAfterOutcome<Row> = { committed: true; result: SqlResult<Row> } | { committed: false; error: unknown; transactionWasOpen: boolean };

export type Unsubscribe = () => Promise<void>;

export interface SqlDatabase extends SqlQueryable {
  /** Opens a transaction on a connection of its own. */
  begin(): Promise<SqlTransaction>;
  /**
   * Subscribes to a notification channel. Implementations share one listening connection, however
   * many channels and callbacks there are. `onReconnect` (optional) is called once the subscription was
   * renewed on a new connection after the old one was lost: notifications sent in between were missed, and
   * whatever the old session held (waiters' announcements) is gone.
   */
  listen(channel: string, onNotify: (payload: string) => void, onReconnect?: () => void): Promise<Unsubscribe>;
  /**
   * Runs a statement on the listening session: a waiting duplicate holds a lock there for as long as it
   * waits, and completions notify only while such a lock is held. Optional: without it (PGlite, whose one
   * session is everyone's) completions always notify.
   */
  queryOnListener?<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<SqlResult<Row>>;
  /** Closes what the adapter opened itself (the listening connection); never the pool it was given. */
  close(): Promise<void>;
}
