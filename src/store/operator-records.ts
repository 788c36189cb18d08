import { trace } from '@opentelemetry/api';
import { ATTR, EVENT } from '../telemetry/names.js';
import type { Find } from './primitives/find.js';
import type { Forget, ForgetRequest } from './primitives/forget.js';
import type { SqlQueryable } from './sql-database.js';
import type { IdempotencyRecord } from './types.js';

/** What `forget` did: removed the record, found none, or refused because it is in progress. */
export type ForgetResult =
  | { kind: 'forgotten'; record: IdempotencyRecord }
  | { kind: 'not_found' }
  /** `leaseLapsed`: the owner's lease ran out (a crash), so `force` may remove it; otherwise it is running now. */
  | { kind: 'in_progress'; record: IdempotencyRecord; leaseLapsed: boolean };

/**
 * The operator's forget (`koa-idempotency forget`): the forget primitive deletes the record in one statement,
 * so it cannot change between the check and the write; nothing deleted, the record as it stands tells why.
 */
export async function forgetRecord(db: SqlQueryable, sql: { forget: Forget; find: Find }, request: ForgetRequest): Promise<ForgetResult> {
  const removed = await sql.forget.run(db, request);
  if (removed) {
    auditOnActiveSpan(removed);
    return { kind: 'forgotten', record: removed };
  }
  const record = await sql.find.run(db, request.scope, request.key);
  if (!record) return { kind: 'not_found' };
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
