import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { ClaimRequest } from '../types.js';
import { blockingRecord, claimValues, INSERT_COLUMNS, ON_CONFLICT, partitionedClaim, PROPOSED_ROW } from './claim-row.js';
import { RECORD_COLUMNS, type RecordRow } from './record-row.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

/** A fresh snapshot sees a row committed a moment after the previous one was taken; a few tries suffice. */
const CLAIM_ATTEMPTS = 5;

/**
 * A row of the full claim: the record with `claimed` (this claim holds it now), or in transactional mode
 * `acquired` = false and no record when another transaction holds the key.
 */
export type ClaimRow = RecordRow & { claimed: boolean; acquired?: boolean | null };

/** The full claim of a key that may be taken: lease mode's (this file) or transactional mode's (claim-in-transaction.ts). */
export interface FullClaim extends NamedStatement {
  /**
   * Runs the claim on `db` (the pool, or the claim's transaction), again with a fresh snapshot until it finds
   * the key free, the record in the way, or (transactional) the key's lock taken.
   */
  run(db: SqlQueryable, request: ClaimRequest, fence: string): Promise<ClaimRow>;
}

/**
 * The claim: ONE statement that either inserts (or takes over) the record and returns it with claimed = true,
 * or returns the record that stands in the way with claimed = false.
 * The record in the way is read first, so a duplicate (a replay, a 409, a 422) only reads: it never attempts
 * the insert, whose ON CONFLICT would lock the row and make the statement write.
 * Under READ COMMITTED that read uses the statement's snapshot, which may predate a conflicting row committed
 * a moment later: the insert then finds the conflict, the statement returns no row, and it runs again.
 */
export function claim({ table, partitioned }: PrimitiveOptions): FullClaim {
  if (partitioned) return fullClaim('claim', partitionedClaim(table, true), false);
  const text = `WITH ${blockingRecord(table)} claimed AS (
  INSERT INTO ${qualified(table)} AS r ${INSERT_COLUMNS}
  SELECT v.* FROM (VALUES ${PROPOSED_ROW}) AS v WHERE NOT EXISTS (SELECT 1 FROM blocking)
  ${ON_CONFLICT}
  RETURNING ${RECORD_COLUMNS}
)
SELECT *, true AS claimed FROM claimed
UNION ALL
SELECT *, false AS claimed FROM blocking`;
  return fullClaim('claim', text, true);
}

/** A full claim of `text`; `withFence`: it takes the fence as $9 (the plain table's). */
export function fullClaim(name: string, text: string, withFence: boolean): FullClaim {
  return {
    name,
    text,
    run: async (db, request, fence) => {
      const values = withFence ? claimValues(request, fence) : claimValues(request);
      for (let attempt = 1; attempt <= CLAIM_ATTEMPTS; attempt++) {
        // The transactional statement always yields one row (its lock CTE), with no record when none was found.
        const { rows } = await db.query<ClaimRow>(text, values);
        const row = rows[0];
        if (row && (row.acquired === false || row.status !== null)) return row;
      }
      throw new Error('the claim found neither a free key nor a record after retries');
    },
  };
}
