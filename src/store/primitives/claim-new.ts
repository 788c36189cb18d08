import { keyLockExpression, qualified } from '../schema.js';
import type { ClaimRequest, ClaimResult, Lease } from '../types.js';
import { claimValues, INSERT_COLUMNS, PROPOSED_ROW } from './claim-row.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

/**
 * The common case of the claim in one plain INSERT: a key nobody holds. It returns one row when the record went
 * in (then claimedNew is that record), none when the key is taken, and the full claim (claim.ts,
 * claim-in-transaction.ts) then decides. The caller runs it and counts the rows: on the path of every new key,
 * it costs nothing beyond the query.
 */
export interface ClaimNew extends NamedStatement {
  /** $1 to $9: the request's (claimValues) and the fence. */
  values(request: ClaimRequest, fence: string): unknown[];
}

/**
 * The plain INSERT of a new key; in the claim's transaction (`inTransaction`) behind the key's advisory lock,
 * taken without waiting (see claim-in-transaction.ts): no row inserted then means the lock or the key is taken.
 * Undefined on a partitioned table, whose claim function keeps keys unique across partitions.
 */
export function claimNew({ table, partitioned }: PrimitiveOptions, inTransaction: boolean): ClaimNew | undefined {
  if (partitioned) return undefined;
  const source = inTransaction
    ? `SELECT v.* FROM (VALUES ${PROPOSED_ROW}) AS v WHERE pg_try_advisory_xact_lock(${keyLockExpression(table, '$1', '$2')})`
    : `VALUES ${PROPOSED_ROW}`;
  // RETURNING tells whether a row went in: Citus reports INSERT 0 1 for an INSERT ... SELECT that inserted nothing.
  const text = `INSERT INTO ${qualified(table)} AS r ${INSERT_COLUMNS}
  ${source}
  ON CONFLICT (scope, key) DO NOTHING
  RETURNING 1`;
  return {
    name: inTransaction ? 'claim_new_in_transaction' : 'claim_new',
    text,
    values: claimValues,
  };
}

/**
 * The record a new key's claim just inserted, as the INSERT would have returned it: reading nothing back keeps
 * its statement as lean as a hand-written one.
 */
export function claimedNew(request: ClaimRequest, fence: string): ClaimResult {
  const createdAt = new Date();
  const lease: Lease = { scope: request.scope, key: request.key, fence, ttlSeconds: request.ttlSeconds };
  return {
    kind: 'claimed',
    lease,
    record: {
      scope: request.scope,
      key: request.key,
      status: 'in_progress',
      fingerprint: request.fingerprint,
      fingerprintVersion: request.fingerprintVersion,
      fence,
      attempt: 1,
      steps: {},
      replayable: null,
      response: null,
      correlationId: request.correlationId ?? null,
      traceparent: request.traceparent ?? null,
      createdAt,
      completedAt: null,
      expiresAt: new Date(createdAt.getTime() + request.ttlSeconds * 1000),
      leaseRemainingMs: request.leaseMs,
      ageMs: 0,
    },
  };
}
