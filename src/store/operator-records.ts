import { trace } from '@opentelemetry/api';
import { ATTR, EVENT } from '../telemetry/names.js';
import { toRecord, type RecordRow } from './record-rows.js';
import { qualified, type TableName } from './schema.js';
import type { SqlQueryable } from './sql-database.js';
import { RECORD_COLUMNS, WHERE_THE_LISTENERS_ARE } from './statements.js';
import type { IdempotencyRecord } from './types.js';

/**
 * The operator's record primitives (`koa-idempotency inspect --instance`, `forget`): not part of the store
 * contract, never on a request's path. Each is one statement, so a record cannot change between the check
 * and the write.
 */

/** What `forget` did: removed the record, found none, or refused because it is in progress. */
export type ForgetResult =
  | { kind: 'forgotten'; record: IdempotencyRecord }
  | { kind: 'not_found' }
  /** `leaseLapsed`: the owner's lease ran out (a crash), so `force` may remove it; otherwise it is running now. */
  | { kind: 'in_progress'; record: IdempotencyRecord; leaseLapsed: boolean };

/** Which record to forget; `channel` and `notice` are the NOTIFY sent with the deletion, in the same statement. */
export interface ForgetRequest {
  scope: string;
  key: string;
  force: boolean;
  channel: string;
  notice: string;
}

/**
 * Deletes a completed record, or with `force` an in-progress one whose lease has lapsed, and returns it. A
 * live lease is never deleted: its handler is running and would complete into nothing, or, in transactional
 * mode, its row lock is held (SKIP LOCKED: the statement never waits for a running handler). Nothing deleted:
 * the record as it stands tells why. The NOTIFY is outside the DELETE, where Citus allows it (statements.ts).
 */
export async function forgetRecord(db: SqlQueryable, table: TableName, request: ForgetRequest): Promise<ForgetResult> {
  const { scope, key, force, channel, notice } = request;
  const name = qualified(table);
  const { rows } = await db.query<RecordRow>(
    `WITH doomed AS (
  SELECT scope, key, created_at FROM ${name}
  WHERE scope = $1 AND key = $2 AND (status = 'completed' OR ($3::boolean AND lease_expires_at <= now()))
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM ${name} r USING doomed d WHERE r.scope = d.scope AND r.key = d.key AND r.created_at = d.created_at
  RETURNING ${RECORD_COLUMNS}
)
SELECT gone.*, pg_notify($4, $5)::text AS notified FROM gone ${WHERE_THE_LISTENERS_ARE}`,
    [scope, key, force, channel, notice],
  );
  const removed = rows[0];
  if (removed) {
    const record = toRecord(removed);
    auditOnActiveSpan(record);
    return { kind: 'forgotten', record };
  }
  const found = await db.query<RecordRow>(`SELECT ${RECORD_COLUMNS} FROM ${name} r WHERE r.scope = $1 AND r.key = $2`, [scope, key]);
  if (!found.rows[0]) return { kind: 'not_found' };
  const record = toRecord(found.rows[0]);
  return { kind: 'in_progress', record, leaseLapsed: record.status === 'in_progress' && record.leaseRemainingMs <= 0 };
}

/**
 * The audit trail of a forget, where the caller runs under an OpenTelemetry SDK: an event on the active span
 * with the record's correlation ID (never its key or scope), so the removal shows up beside the key's traces.
 */
function auditOnActiveSpan(record: IdempotencyRecord): void {
  trace.getActiveSpan()?.addEvent(EVENT.FORGET, {
    ...(record.correlationId ? { [ATTR.CORRELATION_ID]: record.correlationId } : {}),
    [ATTR.RECORD_STATUS]: record.status,
    [ATTR.RECORD_AGE]: record.ageMs / 1000,
  });
}

/**
 * The records whose correlation ID carries `tag` (the first 12 hex digits of its SHA-256, as problem
 * occurrence IDs carry it; see problem-instance.ts). No index serves this: it reads the whole table, which is
 * fine for an operator looking up one support case, and never done on a request's path.
 */
export async function findByCorrelationTag(db: SqlQueryable, table: TableName, tag: string): Promise<IdempotencyRecord[]> {
  const { rows } = await db.query<RecordRow>(
    `SELECT ${RECORD_COLUMNS} FROM ${qualified(table)} r
WHERE r.correlation_id IS NOT NULL AND left(encode(sha256(convert_to(r.correlation_id, 'UTF8')), 'hex'), 12) = $1
ORDER BY r.created_at DESC LIMIT 10`,
    [tag],
  );
  return rows.map(toRecord);
}
