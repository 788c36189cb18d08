import { sqlstateOf } from '../../error-code.js';
import { FencedError } from '../../errors.js';
import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import { CLAIM_MARK } from '../transaction-control.js';
import type { Completion, Lease } from '../types.js';
import { notifyChannel, notifyId } from '../waiters.js';
import { notifyExpression, WHERE_THE_LISTENERS_ARE } from './notify-waiters.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

/**
 * SQLSTATE division_by_zero, which the completion in the claim's transaction raises when it completed no
 * record (fenced, or the transaction is not the claim's any more): a statement that fails aborts the
 * transaction, so a COMMIT sent right behind it without waiting for its answer (pipelined) rolls back.
 */
export const NOTHING_COMPLETED = '22012';

export interface Complete extends NamedStatement {
  /** $1 to $10, and in the claim's transaction $11, its mark (see openClaimTransaction). */
  values(lease: Lease, completion: Completion, claimMark?: string): unknown[];
  /** Throws FencedError when it completed nothing: the lease was lost, or the claim's transaction ended. */
  run(db: SqlQueryable, lease: Lease, completion: Completion, claimMark?: string): Promise<void>;
}

/**
 * Completes the record if, and only if, this worker still owns it (its fence), then wakes waiters. A record
 * this same fence already completed matches too: a completion whose answer was lost can be retried, and
 * rewrites the very same response. Expiry counts from the completion (statement_timestamp(): inside a
 * transaction now() is its start; not clock_timestamp(), which is VOLATILE, and Citus refuses volatile
 * functions in an UPDATE of a distributed table), $10 seconds ahead.
 *
 * `inClaimTransaction`: the completion inside the claim's transaction, which it only finds while that
 * transaction is still open (its mark, $11): a handler that committed early leaves it nothing to update, at no
 * extra round trip. It then returns one row (completed = 1) when the record was completed, else fails with
 * NOTHING_COMPLETED (1 / 0), so that a COMMIT pipelined behind it cannot commit; the MATERIALIZED step is read
 * whole by count(*), so its NOTIFY still runs.
 */
export function complete({ table, notify }: PrimitiveOptions, inClaimTransaction: boolean): Complete {
  const condition = inClaimTransaction ? ` AND current_setting('${CLAIM_MARK}', true) = $11` : '';
  const done = `WITH done AS (
  UPDATE ${qualified(table)} SET status = 'completed', completed_at = statement_timestamp(), lease_expires_at = NULL,
    replayable = $4, response_status = $5, response_headers = $6, response_body = $7,
    expires_at = statement_timestamp() + make_interval(secs => $10::float8)
  WHERE scope = $1 AND key = $2 AND fence = $3::bigint${condition}
  RETURNING 1
)`;
  const notifying = notifyExpression(table, notify, '$8', '$9');
  const text = inClaimTransaction
    ? // ::text: Citus keeps the MATERIALIZED step as an intermediate result, which cannot hold pg_notify()'s void.
      `${done}, notified AS MATERIALIZED (
  SELECT (${notifying})::text AS notified FROM done ${WHERE_THE_LISTENERS_ARE}
)
SELECT 1 / count(*)::int AS completed FROM notified`
    : `${done}\nSELECT ${notifying} FROM done ${WHERE_THE_LISTENERS_ARE}`;
  const channel = notifyChannel(table);

  const values = (lease: Lease, completion: Completion, claimMark?: string): unknown[] => {
    const response = completion.replayable ? completion.response : null;
    const status = completion.replayable ? completion.response.status : completion.status;
    const headers = response && JSON.stringify(response.headers);
    const body = response?.body ?? null;
    const payload = notifyId(lease.scope, lease.key);
    if (claimMark === undefined) return [lease.scope, lease.key, lease.fence, completion.replayable, status, headers, body, channel, payload, lease.ttlSeconds];
    return [lease.scope, lease.key, lease.fence, completion.replayable, status, headers, body, channel, payload, lease.ttlSeconds, claimMark];
  };

  return {
    name: inClaimTransaction ? 'complete_in_claim_transaction' : 'complete',
    text,
    values,
    run: async (db, lease, completion, claimMark) => {
      const { rows } = await db.query(text, values(lease, completion, claimMark)).catch((error: unknown) => {
        throw sqlstateOf(error) === NOTHING_COMPLETED ? new FencedError(lease.fence) : error;
      });
      if (rows.length !== 1) throw new FencedError(lease.fence);
    },
  };
}
