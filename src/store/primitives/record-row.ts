import type { IdempotencyRecord } from '../types.js';

/**
 * A record as the statements read it: the columns every reading primitive selects (claim, find, forget), the
 * row they come back as, and the record it maps to. `r` is always the record's row.
 */
export const RECORD_COLUMNS = `r.scope, r.key, r.status, r.fingerprint, r.fingerprint_version, r.fence::text AS fence,
  r.attempt, r.steps, r.replayable, r.response_status, r.response_headers, r.response_body,
  r.correlation_id, r.traceparent, r.created_at, r.completed_at, r.expires_at,
  greatest(0, extract(epoch FROM r.lease_expires_at - now()) * 1000)::float8 AS lease_remaining_ms,
  (extract(epoch FROM now() - r.created_at) * 1000)::float8 AS age_ms,
  (extract(epoch FROM r.expires_at - now()) * 1000)::float8 AS expires_in_ms`;

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
