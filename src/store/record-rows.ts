import type { ClaimRequest, ClaimResult, Completion, IdempotencyRecord, Lease } from './types.js';

/**
 * Between the records table and the store's types: the row the statements return, the record it maps to,
 * the claim's parameters, and the record of a new key, built without reading it back.
 */

/** A record row as the statements return it (pg and PGlite differ in byte and number types). */
export interface RecordRow {
  scope: string;
  key: string;
  status: 'in_progress' | 'completed';
  fingerprint: string;
  fingerprint_version: number;
  fence: string;
  attempt: number;
  steps: Record<string, unknown> | null;
  replayable: boolean | null;
  response_status: number | null;
  response_headers: Record<string, string | string[]> | null;
  response_body: Uint8Array | null;
  correlation_id: string | null;
  traceparent: string | null;
  created_at: Date;
  completed_at: Date | null;
  expires_at: Date;
  lease_remaining_ms: number;
  age_ms: number;
  expires_in_ms: number;
  claimed?: boolean;
}

export function toRecord(row: RecordRow): IdempotencyRecord {
  const replayable = row.replayable === true && row.response_status !== null;
  return {
    scope: row.scope,
    key: row.key,
    status: row.status,
    fingerprint: row.fingerprint,
    fingerprintVersion: Number(row.fingerprint_version),
    fence: String(row.fence),
    attempt: Number(row.attempt),
    steps: row.steps ?? {},
    replayable: row.replayable,
    response: replayable
      ? {
          status: Number(row.response_status),
          headers: row.response_headers ?? {},
          body: row.response_body === null ? null : Buffer.from(row.response_body.buffer, row.response_body.byteOffset, row.response_body.byteLength),
        }
      : null,
    correlationId: row.correlation_id,
    traceparent: row.traceparent,
    createdAt: new Date(row.created_at),
    completedAt: row.completed_at && new Date(row.completed_at),
    expiresAt: new Date(row.expires_at),
    leaseRemainingMs: Number(row.lease_remaining_ms ?? 0),
    ageMs: Number(row.age_ms),
  };
}

/** $1 to $8 of every claim statement (the plain table's add the fence as $9). */
/** The completion's parameters ($1 to $10, and $11 the claim's mark inside its transaction); see statements.ts. */
export function completionParams(lease: Lease, completion: Completion, channel: string, notifyPayload: string, claimMark?: string): unknown[] {
  const response = completion.replayable ? completion.response : null;
  return [
    lease.scope,
    lease.key,
    lease.fence,
    completion.replayable,
    completion.replayable ? completion.response.status : completion.status,
    response && JSON.stringify(response.headers),
    response?.body ?? null,
    channel,
    notifyPayload,
    lease.ttlSeconds,
    ...(claimMark === undefined ? [] : [claimMark]),
  ];
}

export function claimParams(request: ClaimRequest): unknown[] {
  return [
    request.scope,
    request.key,
    request.fingerprint,
    request.fingerprintVersion,
    request.leaseMs,
    request.ttlSeconds,
    request.correlationId ?? null,
    request.traceparent ?? null,
  ];
}

/**
 * A record this claim just inserted, as the INSERT would have returned it: a new key is the common case,
 * and reading nothing back keeps its statement as lean as a hand-written one.
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
