import { IdempotencyError } from '../errors.js';
import type { SqlQueryable, SqlTransaction } from './sql-database.js';

/**
 * A transactional handler's writes, the claim and the stored response commit together, when the store
 * commits. A handler that ends that transaction itself (a query builder's `transaction()` sends BEGIN and
 * COMMIT on the client it is given) would commit the claim and half the operation early, and the stored
 * response after it on its own. The adapters refuse the statements that would do so; what they cannot read
 * (a COMMIT inside a multi-statement text) the store detects at completion, and fails with this error too.
 */
export class TransactionControlError extends IdempotencyError {
  override name = 'TransactionControlError';
  override readonly code = 'TRANSACTION_CONTROL';
}

/** Statements that open, end or hand over a transaction. ROLLBACK TO (a savepoint) is not among them. */
const CONTROL = /^(begin|start|commit|end|abort|rollback|prepare\s+transaction)\b/i;
const ROLLBACK_TO_SAVEPOINT = /^rollback(\s+(work|transaction))?\s+to\b/i;
/** Enough of the first statement for every pattern here. */
const HEAD_CHARS = 64;

/** The error for a statement that would end or restart the claim's transaction; undefined for any other. */
export function transactionControlError(text: string): TransactionControlError | undefined {
  return controlErrorOf(firstStatementHead(text));
}

function controlErrorOf(head: string): TransactionControlError | undefined {
  const control = CONTROL.exec(head);
  if (!control || ROLLBACK_TO_SAVEPOINT.test(head)) return undefined;
  return new TransactionControlError(
    `${control[1]!.toUpperCase()} is refused on the idempotency claim's transaction: the claim, the handler's writes and the ` +
      'stored response commit together when the middleware commits. Nest with SAVEPOINT and ROLLBACK TO SAVEPOINT ' +
      "(a query builder's nested transaction), not with a transaction of its own.",
  );
}

/**
 * Statements that change the session, not the transaction: a committed SET, a LISTEN, a DEALLOCATE (which
 * left node-postgres sure its prepared statements still existed, so every later claim on that connection
 * failed) outlive the request on the pooled connection and reach whichever request gets it next.
 * SET LOCAL, SET CONSTRAINTS and SET TRANSACTION end with the transaction and stay allowed, when a word follows
 * them: `SET local.tenant = …` (or `SET local . tenant`) is a session SET of a setting named `local.tenant`. The
 * white space is Postgres's own, not JavaScript's `\s`: a no-break space is part of a name to Postgres, so
 * `SET LOCAL\u00a0x.tenant` sets `local\u00a0x.tenant` for the session.
 */
const SESSION_STATE =
  /^(set(?![ \t\n\r\f\v]+(local|constraints|transaction)[ \t\n\r\f\v]+[^. \t\n\r\f\v])|reset|discard|deallocate|listen|unlisten|load|prepare(?!\s+transaction\b))\b/i;

/**
 * COPY in the table form (`COPY t FROM STDIN`): node-postgres answers the server's request for COPY data
 * with a CopyFail and no Sync, on the extended protocol the handler's queries use, so the server waits for a
 * Sync that never comes and the request and its connection hang for good. The query form, `COPY (query) TO
 * STDOUT`, can only write to the client and stays allowed.
 */
const TABLE_COPY = /^copy\b(?!\s*\()/i;

/** The error for a statement a handler may not run on the claim's connection; undefined for any other. */
export function handlerStatementError(text: string): TransactionControlError | undefined {
  const head = firstStatementHead(text);
  const control = controlErrorOf(head);
  if (control) return control;
  if (TABLE_COPY.test(head)) {
    return new TransactionControlError(
      "COPY of a table is refused on the idempotency claim's connection: COPY ... FROM STDIN would hang it. Write rows with " +
        'INSERT (unnest() for many), and read with the query form, COPY (SELECT ...) TO STDOUT.',
    );
  }
  const session = SESSION_STATE.exec(head);
  if (!session) return undefined;
  return new TransactionControlError(
    `${session[1]!.toUpperCase()} is refused on the idempotency claim's connection: it would outlive the request on a pooled ` +
      'connection that other requests use next. Use SET LOCAL (or set_config(..., true)) for a setting of this transaction.',
  );
}

export function assertNoTransactionControl(text: string): void {
  const error = transactionControlError(text);
  if (error) throw error;
}

/** Thrown at completion when the claim's transaction is not the one open any more. */
export function claimTransactionEnded(): TransactionControlError {
  return new TransactionControlError(
    "The idempotency claim's transaction was ended before its completion (a COMMIT or ROLLBACK sent by the handler): " +
      'the stored response was not written. The record is kept as executed, not replayable, so a retry does not run the operation again.',
  );
}

/**
 * A setting local to the claim's transaction, set to a value of its own (the claim's fence, random and
 * digits only): it is gone once that transaction ends, however it ended, even if the handler opened another
 * one since. Unlike the transaction ID it costs no round trip at the claim (it travels with BEGIN) and
 * consumes no transaction ID for a duplicate.
 */
export const CLAIM_MARK = 'koa_idempotency.claim_mark';

/**
 * The largest lock_timeout Postgres accepts: an int of milliseconds (about 24.8 days). SET refuses anything
 * larger (22023), which would fail every transaction that sets it: both lock timeout options stop here.
 */
export const MAX_LOCK_TIMEOUT_MS = 2_147_483_647;

/**
 * A transaction's lock timeout. On Citus (`citus`, see citus-probe.ts) two statements in one text: SET LOCAL,
 * which Citus sends on to the nodes holding the shards when citus.propagate_set_commands is 'local'
 * (set_config() times the coordinator's waits only: a handler waiting on a worker's row lock waited past 60 s).
 * Elsewhere one statement, which an adapter sending every text by the extended protocol runs too.
 */
export function localLockTimeout(lockTimeoutMs: number, citus: boolean): string {
  const ms = Math.round(lockTimeoutMs);
  return citus ? `SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL lock_timeout = ${ms}` : `SELECT set_config('lock_timeout', '${ms}', true)`;
}

/**
 * The claim transaction's first text (it travels with BEGIN): its lock timeout and its mark. Where the adapter
 * runs several statements in it (`severalStatementsFirst`), two SET LOCALs, which Postgres runs without planning
 * (its CPU per claim falls by about a tenth against one SELECT of two set_config() calls, bench/statements.ts).
 */
export async function openClaimTransaction(tx: SqlTransaction, lockTimeoutMs: number, mark: string, citus: boolean): Promise<void> {
  if (!/^\d+$/.test(mark)) throw new Error('a claim mark is a fence: digits only');
  const marking = `set_config('${CLAIM_MARK}', '${mark}', true)`;
  if (citus) await tx.query(`${localLockTimeout(lockTimeoutMs, true)}; SELECT ${marking}`);
  else if (tx.severalStatementsFirst) await tx.query(`SET LOCAL lock_timeout = ${Math.round(lockTimeoutMs)}; SET LOCAL ${CLAIM_MARK} = '${mark}'`);
  else await tx.query(`${localLockTimeout(lockTimeoutMs, false)}, ${marking}`);
}

/** Whether the transaction open on `tx` is still the claim's; rejects when it is aborted (it still is then). */
export async function isClaimTransaction(tx: SqlQueryable, mark: string): Promise<boolean> {
  const { rows } = await tx.query<{ mark: string | null }>(`SELECT current_setting('${CLAIM_MARK}', true) AS mark`);
  return rows[0]?.mark === mark;
}

/**
 * The first statement's first HEAD_CHARS characters as Postgres reads them: leading white space and empty
 * statements skipped, and each comment (nested block comments too) read as the white space it stands for, so
 * `SET LOCAL/* *\/x` reads as `SET LOCAL x` and `ROLLBACK /* TO SAVEPOINT s *\/` as a plain ROLLBACK. Linear time.
 */
function firstStatementHead(text: string): string {
  let at = 0;
  while (at < text.length) {
    const commentEnd = afterComment(text, at);
    if (commentEnd !== undefined) at = commentEnd;
    else if (text[at] === ';' || text[at]!.trim() === '') at++;
    else break;
  }
  // Most heads hold no comment: a slice of the text, then. One character more is looked at, since a comment
  // that starts with the head's last character reads as a space there, not as that character.
  const window = text.slice(at, at + HEAD_CHARS + 1);
  return window.includes('--') || window.includes('/*') ? withCommentsAsSpaces(text, at) : window.slice(0, HEAD_CHARS);
}

function withCommentsAsSpaces(text: string, start: number): string {
  let head = '';
  let at = start;
  while (at < text.length && head.length < HEAD_CHARS) {
    const commentEnd = afterComment(text, at);
    if (commentEnd !== undefined) {
      head += ' ';
      at = commentEnd;
    } else {
      head += text[at]!;
      at++;
    }
  }
  return head;
}

/** Where the comment starting at `at` ends; undefined when none starts there. */
function afterComment(text: string, at: number): number | undefined {
  if (text.startsWith('--', at)) {
    // Postgres ends a line comment at a carriage return as well: a comment read to the next \n only would
    // hide the statement after a lone \r, which Postgres runs.
    const lineEnd = text.slice(at).search(/[\n\r]/);
    return lineEnd === -1 ? text.length : at + lineEnd + 1;
  }
  return text.startsWith('/*', at) ? afterBlockComment(text, at) : undefined;
}

function afterBlockComment(text: string, start: number): number {
  let depth = 0;
  let at = start;
  while (at < text.length) {
    if (text.startsWith('/*', at)) {
      depth++;
      at += 2;
    } else if (text.startsWith('*/', at)) {
      depth--;
      at += 2;
      if (depth === 0) return at;
    } else {
      at++;
    }
  }
  return text.length;
}
