import { sqlstateOf } from '../error-code.js';
import type { Writable } from 'node:stream';
import type { PoolClient } from 'pg';
import type { Statements } from './pg-statements.js';
import type { CommitAfterOutcome, SqlResult, SqlTransaction } from './sql-database.js';
import { assertNoTransactionControl } from './transaction-control.js';

/**
 * A transaction on one pooled client. BEGIN costs a round trip of its own unless it travels with the
 * first statement: a statement without parameters goes out as the simple-query `BEGIN; <statement>`, one
 * round trip (node-postgres sends a parameterless query as one simple query, several statements and all).
 * A first statement with parameters needs the extended protocol, which carries one statement only, so
 * BEGIN then goes ahead of it on its own.
 *
 * On a client created with `pipeline: true` (node-postgres 8.23), statements sent before the previous one
 * answered go out at once: the store sends its claim right behind BEGIN, and its completion with COMMIT.
 */
export class PgTransaction implements SqlTransaction {
  readonly #client: PoolClient;
  readonly #statements: Statements;
  /**
   * Both only on a pipelined client: without pipelining a statement queued behind another would wait for it
   * anyway, and node-postgres deprecates queueing on a client.
   */
  readonly sendTogether: SqlTransaction['sendTogether'];
  readonly commitAfter: SqlTransaction['commitAfter'];
  readonly severalStatementsFirst = true;
  /** BEGIN sent on its own (settles when it has run); undefined until then or when it went with a statement. */
  #beginning: Promise<unknown> | undefined;
  #begun = false;
  #done = false;
  /** The session lost what node-postgres believes of it: never to be reused. */
  #broken = false;

  constructor(client: PoolClient, statements: Statements) {
    this.#client = client;
    this.#statements = statements;
    const socket = (client as unknown as { connection?: { stream?: Writable } }).connection?.stream;
    const pipelined = client.pipeline === true && socket !== undefined;
    this.sendTogether = pipelined ? (send) => sendInOneWrite(socket, send) : undefined;
    this.commitAfter = pipelined ? (text, params) => this.#commitAfter(text, params) : undefined;
  }

  async query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    if (this.#done) throw new Error('the transaction has ended');
    // Only commit() and rollback() end it: a COMMIT sent here would commit whatever ran so far on its own.
    assertNoTransactionControl(text);
    if (!this.#begun && (params === undefined || params.length === 0)) {
      this.#begun = true;
      const results = (await this.#client.query(`BEGIN;\n${text}`)) as unknown as SqlResult<Row> | Array<SqlResult<Row>>;
      // One result per statement comes back; the caller's statement is the last.
      return Array.isArray(results) ? results[results.length - 1]! : results;
    }
    this.#beginAlone();
    // Not awaited when BEGIN went with a statement: the statement goes out in the caller's tick (sendTogether).
    if (this.#beginning) await this.#beginning;
    return this.#run<Row>(text, params);
  }

  async commit(): Promise<void> {
    await this.#end('COMMIT');
  }

  async rollback(): Promise<void> {
    await this.#end('ROLLBACK');
  }

  #run<Row>(text: string, params: unknown[] | undefined): Promise<SqlResult<Row>> {
    return this.#statements.run<Row>(this.#client, text, params, true).catch((error: unknown) => {
      // The store's named statements are gone from this session (a handler's DEALLOCATE inside a DO block,
      // which no keyword check sees), while node-postgres still believes them prepared: every later claim on
      // the connection would fail. It is destroyed at the end instead of going back to the pool.
      if (sqlstateOf(error) === PREPARED_STATEMENT_MISSING) this.#broken = true;
      throw error;
    });
  }

  async #commitAfter<Row>(text: string, params: unknown[]): Promise<CommitAfterOutcome<Row>> {
    if (this.#done) throw new Error('the transaction has ended');
    this.#beginAlone();
    await this.#beginning;
    this.#done = true;
    // Both written before either answers; each carries its own Sync, so the COMMIT runs whatever the
    // statement did: after a failure it finds the transaction aborted and rolls it back (tag ROLLBACK).
    const [statement, ending] = this.sendTogether!(() => [
      this.#run<Row>(text, params),
      this.#client.query(`COMMIT; ${SESSION_CLEANUP}`) as unknown as Promise<Array<{ command: string }>>,
    ]);
    const [result, ended] = await Promise.allSettled([statement, ending]);
    if (ended.status === 'rejected') {
      await this.#releaseAfterRefusedEnd(ended.reason as Error);
      throw ended.reason;
    }
    this.#releaseSettled();
    const tag = ended.value[0]?.command;
    if (result.status === 'rejected') return { committed: false, error: result.reason, transactionWasOpen: tag === 'ROLLBACK' };
    // A statement that succeeded leaves nothing to roll back: a ROLLBACK here means the transaction was aborted
    // before it, and what ran in it is gone.
    if (tag !== 'COMMIT') return { committed: false, error: new Error(`the COMMIT answered ${tag}`), transactionWasOpen: true };
    return { committed: true, result: result.value };
  }

  /** Sends BEGIN on its own; its failure surfaces at the next await. */
  #beginAlone(): void {
    if (this.#begun) return;
    this.#begun = true;
    this.#beginning = this.#client.query('BEGIN');
    this.#beginning.catch(() => undefined);
  }

  async #end(statement: string): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    try {
      // Nothing sent yet means no transaction is open on the server: nothing to end.
      if (this.#begun) {
        await this.#beginning;
        await this.#client.query(`${statement}; ${SESSION_CLEANUP}`);
      }
      this.#releaseSettled();
    } catch (error) {
      await this.#releaseAfterRefusedEnd(error as Error);
      throw error;
    }
  }

  /**
   * After COMMIT or ROLLBACK failed. An error Postgres answered (a deferred constraint refused at COMMIT) ended
   * the transaction, but it reaches us before the backend has released the transaction's locks (Postgres flushes
   * an error report at once, then aborts), and the session cleanup sent behind it did not run. A ROLLBACK with the
   * cleanup is answered only once the abort is done: the session is clean again, and a retry answered after this
   * no longer finds the key's lock held (a 409 to a retry of a request whose 500 said nothing was committed).
   * Any other failure (a lost connection, a client-side timeout) leaves the transaction's state unknown, and
   * such a connection must never go back to the pool.
   */
  async #releaseAfterRefusedEnd(error: Error): Promise<void> {
    if (sqlstateOf(error) === undefined) return this.#release(error);
    try {
      await this.#client.query(`ROLLBACK; ${SESSION_CLEANUP}`);
      this.#releaseSettled();
    } catch (cleanupError) {
      this.#release(cleanupError as Error);
    }
  }

  #releaseSettled(): void {
    this.#release(this.#broken ? new Error('its prepared statements were deallocated') : undefined);
  }

  #release(error: Error | undefined): void {
    this.#client.off('error', ignoreConnectionError);
    this.#client.release(error);
  }
}

export function ignoreConnectionError(): void {}

/**
 * Runs `send`, holding what it writes to the socket until it returns, then writes it all in one system call:
 * node-postgres writes each query as it is sent (one write for the messages of an extended query), and on
 * loopback each write costs about as much CPU as the JavaScript of a statement. Postgres reads them in one go.
 */
function sendInOneWrite<T>(socket: Writable, send: () => T): T {
  socket.cork();
  try {
    return send();
  } finally {
    socket.uncork();
  }
}

/** SQLSTATE invalid_sql_statement_name: a named statement that node-postgres prepared is not in the session. */
const PREPARED_STATEMENT_MISSING = '26000';

/**
 * Sent with COMMIT or ROLLBACK: what a handler could leave on the session through a function or a DO block, which
 * no keyword check sees (session advisory locks, LISTENs, cursors WITH HOLD, temporary tables), is dropped before
 * the pool gets the connection back. Not settings: RESET ALL would undo what the pool set on connect.
 * After the COMMIT, not before it: a deferred trigger that runs at COMMIT could leave any of these behind, and
 * DISCARD TEMP refuses a temporary table with trigger events pending. pg_catalog named: a search_path the handler
 * set for its session could put a function of the same name ahead of it.
 */
export const SESSION_CLEANUP = 'SELECT pg_catalog.pg_advisory_unlock_all(); UNLISTEN *; CLOSE ALL; DISCARD TEMP';
