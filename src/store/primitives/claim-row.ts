import { claimFunction } from '../partitioned-schema.js';
import { qualified, type TableName } from '../schema.js';
import type { ClaimRequest } from '../types.js';
import { RECORD_COLUMNS } from './record-row.js';

/**
 * What every claim writes: the proposed row, $1 to $9 with the function that binds them, and the conditions
 * under which it takes over the row in its way. Conditions are named constants so the claim reads like its
 * specification. `r` is always the existing row.
 */

/** The record has outlived its TTL: it is as if it did not exist. */
const EXPIRED = 'r.expires_at <= now()';
/**
 * The owner's lease ran out without a completion (a crash, a hang): the same request may take over. "The same"
 * compares the fingerprints' first words: the per-part digests after them (fingerprint-parts.ts) are not part
 * of the identity, and a record written before they existed still matches its retry.
 */
const LEASE_LAPSED = `r.status = 'in_progress' AND r.lease_expires_at <= now() AND split_part(r.fingerprint, ' ', 1) = split_part(EXCLUDED.fingerprint, ' ', 1)`;
/** LEASE_LAPSED, judged before the insert: against the request's fingerprint parameter. */
const LEASE_LAPSED_FOR_REQUEST = LEASE_LAPSED.replace('EXCLUDED.fingerprint', '$3::text');
/**
 * EXPIRED and LEASE_LAPSED inside ON CONFLICT DO UPDATE, where Citus refuses any function not IMMUTABLE (0A000,
 * docs/scale-out.md): the proposed row's created_at is now() (its default), the same instant as a column.
 */
const CLAIM_TIME = 'EXCLUDED.created_at';
const EXPIRED_AT_CLAIM = EXPIRED.replace('now()', CLAIM_TIME);
const LEASE_LAPSED_AT_CLAIM = LEASE_LAPSED.replace('now()', CLAIM_TIME);

/**
 * A new record from the claim's values (claimValues): $1 scope, $2 key, $3 fingerprint, $4 its version, $5 lease
 * ms, $6 TTL seconds, $7 correlation ID, $8 traceparent, $9 fence (see fences.ts). Explicit casts: inside
 * INSERT ... SELECT the parameters would otherwise be typed as text.
 */
export const PROPOSED_ROW = `($1::text, $2::text, $3::text, $4::smallint, 'in_progress', $9::bigint, 1,
    now() + make_interval(secs => $5::float8 / 1000), now() + make_interval(secs => $6::float8), $7::text, $8::text)`;

export const INSERT_COLUMNS = `(scope, key, fingerprint, fingerprint_version, status, fence, attempt,
    lease_expires_at, expires_at, correlation_id, traceparent)`;

/**
 * $1 to $8 of every claim statement, and with `fence` $9: the plain table's statements take the fence drawn in
 * the process, a partitioned table's claim function draws its own.
 */
export function claimValues(request: ClaimRequest, fence?: string): unknown[] {
  const { scope, key, fingerprint, fingerprintVersion, leaseMs, ttlSeconds } = request;
  const correlationId = request.correlationId ?? null;
  const traceparent = request.traceparent ?? null;
  if (fence === undefined) return [scope, key, fingerprint, fingerprintVersion, leaseMs, ttlSeconds, correlationId, traceparent];
  return [scope, key, fingerprint, fingerprintVersion, leaseMs, ttlSeconds, correlationId, traceparent, fence];
}

/** The takeover of the row in the way, when it expired or its lease lapsed; otherwise the insert does nothing. */
export const ON_CONFLICT = `ON CONFLICT (scope, key) DO UPDATE SET
    status = 'in_progress',
    fingerprint = EXCLUDED.fingerprint,
    fingerprint_version = EXCLUDED.fingerprint_version,
    fence = CASE WHEN ${EXPIRED_AT_CLAIM} THEN EXCLUDED.fence ELSE r.fence + 1 END,
    attempt = CASE WHEN ${EXPIRED_AT_CLAIM} THEN 1 ELSE r.attempt + 1 END,
    steps = CASE WHEN ${EXPIRED_AT_CLAIM} THEN '{}'::jsonb ELSE r.steps END,
    created_at = CASE WHEN ${EXPIRED_AT_CLAIM} THEN ${CLAIM_TIME} ELSE r.created_at END,
    replayable = NULL, response_status = NULL, response_headers = NULL, response_body = NULL,
    completed_at = NULL,
    lease_expires_at = EXCLUDED.lease_expires_at,
    expires_at = EXCLUDED.expires_at,
    correlation_id = EXCLUDED.correlation_id,
    traceparent = EXCLUDED.traceparent
  WHERE ${EXPIRED_AT_CLAIM} OR (${LEASE_LAPSED_AT_CLAIM})`;

/** The live record that holds the key for someone else: completed, or in progress under a live lease. */
export function blockingRecord(name: TableName): string {
  return `blocking AS (
  SELECT ${RECORD_COLUMNS} FROM ${qualified(name)} r
  WHERE r.scope = $1 AND r.key = $2 AND NOT (${EXPIRED} OR (${LEASE_LAPSED_FOR_REQUEST}))
),`;
}

/**
 * The claim of a partitioned table: its function (which always returns one row) with the record's columns
 * computed as for the plain table. `wait` = false turns a held key lock into acquired = false.
 */
export function partitionedClaim(name: TableName, wait: boolean): string {
  return `SELECT c.acquired, c.claimed, ${RECORD_COLUMNS}
FROM ${claimFunction(name)}($1, $2, $3, $4, $5, $6, $7, $8, ${wait}) c
CROSS JOIN LATERAL (SELECT (c.rec).*) r`;
}
