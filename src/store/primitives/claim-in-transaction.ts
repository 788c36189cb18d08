import { keyLockExpression, qualified } from '../schema.js';
import { fullClaim, type FullClaim } from './claim.js';
import { blockingRecord, INSERT_COLUMNS, ON_CONFLICT, partitionedClaim, PROPOSED_ROW } from './claim-row.js';
import { RECORD_COLUMNS } from './record-row.js';
import type { PrimitiveOptions } from './statement.js';

/**
 * The transactional claim. A live record in the way is read first and answers without any lock (acquired =
 * true, claimed = false), as in the partitioned claim function: a duplicate only reads. Otherwise a
 * transaction-scoped advisory lock on the key is taken, without waiting, before the insert: an uncommitted
 * claim of the same key in another transaction would make INSERT ... ON CONFLICT wait for that whole
 * transaction, pinning a pool client. When another transaction holds the lock, the statement returns one row
 * with acquired = false and no record, and touches nothing.
 * Readers never take the lock: one holding it for a moment would make a waiter's re-read "busy" after the
 * completion's NOTIFY had gone by, and that waiter would sleep out its whole waitMs.
 */
export function claimInTransaction({ table, partitioned }: PrimitiveOptions): FullClaim {
  if (partitioned) return fullClaim('claim_in_transaction', partitionedClaim(table, false), false);
  const text = `WITH ${blockingRecord(table)} lock AS MATERIALIZED (
  SELECT CASE WHEN EXISTS (SELECT 1 FROM blocking) THEN true ELSE pg_try_advisory_xact_lock(${keyLockExpression(table, '$1', '$2')}) END AS acquired
), claimed AS (
  INSERT INTO ${qualified(table)} AS r ${INSERT_COLUMNS}
  SELECT v.* FROM (VALUES ${PROPOSED_ROW}) AS v, lock WHERE lock.acquired AND NOT EXISTS (SELECT 1 FROM blocking)
  ${ON_CONFLICT}
  RETURNING ${RECORD_COLUMNS}
)
SELECT lock.acquired, record.* FROM lock LEFT JOIN (
  SELECT *, true AS claimed FROM claimed
  UNION ALL
  SELECT *, false AS claimed FROM blocking
) record ON lock.acquired`;
  return fullClaim('claim_in_transaction', text, true);
}
