import type { IdempotencyRecord } from '../../store/types.js';
import { parseTraceparent } from '../../telemetry/traceparent.js';
import { fingerprintHead } from '../../stored-fingerprint.js';
import { correlationTagOf } from '../../problem-instance.js';
import type { InspectTarget, Invocation } from '../arguments.js';
import type { Connection } from '../connection.js';
import { CliError, usageError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import { formatDuration, formatFields } from '../format.js';
import type { CommandResult } from './result.js';

type Inspect = Extract<Invocation, { command: 'inspect' }>;

/**
 * Shows one record. The trace ID is the one of the request that executed the operation (stored with
 * its claim), so it leads to the original trace even when asked about a key that has only been replayed since.
 * With `--instance`, the record is found from a problem's occurrence ID: the tag of its correlation ID
 * (problem-instance.ts) names it, unless it was released, forgotten or swept since.
 */
export async function inspect(invocation: Inspect, connection: Connection): Promise<CommandResult> {
  const record = await findTarget(invocation.target, connection);
  const traceId = parseTraceparent(record.traceparent)?.traceId ?? null;
  const jaegerUrl = traceId && `${invocation.jaegerUrl}/trace/${traceId}`;
  return { exitCode: EXIT.OK, json: toJson(record, traceId, jaegerUrl), text: toText(record, traceId, jaegerUrl) };
}

async function findTarget(target: InspectTarget, connection: Connection): Promise<IdempotencyRecord> {
  if (!('instance' in target)) {
    const record = await connection.store.find(target.scope, target.key);
    if (record) return record;
    throw new CliError(
      'not_found',
      `no record for scope ${JSON.stringify(target.scope)} and key ${JSON.stringify(target.key)} (never claimed, released after a failure, or expired and swept)`,
      EXIT.NOT_FOUND,
    );
  }
  const tag = correlationTagOf(target.instance);
  if (tag === undefined) {
    throw usageError(
      `${JSON.stringify(target.instance)} names no record: only the urn:uuid (version 8) of a problem answered on a key does; a problem answered before a key was read concerns no record`,
    );
  }
  // Two records whose correlation IDs share 48 bits are a one in 10^14 chance per pair: the newest is shown.
  const [record] = await connection.store.findByCorrelationTag(tag);
  if (record) return record;
  throw new CliError('not_found', `no record for problem ${target.instance} (released after a failure, forgotten, or expired and swept)`, EXIT.NOT_FOUND);
}

function toJson(record: IdempotencyRecord, traceId: string | null, jaegerUrl: string | null) {
  return {
    scope: record.scope,
    key: record.key,
    status: record.status,
    ageMs: Math.round(record.ageMs),
    createdAt: record.createdAt.toISOString(),
    completedAt: record.completedAt?.toISOString() ?? null,
    expiresAt: record.expiresAt.toISOString(),
    leaseRemainingMs: Math.round(record.leaseRemainingMs),
    attempt: record.attempt,
    fence: record.fence,
    fingerprint: fingerprintHead(record.fingerprint),
    fingerprintVersion: record.fingerprintVersion,
    replayable: record.replayable,
    responseStatus: record.response?.status ?? null,
    steps: Object.keys(record.steps),
    correlationId: record.correlationId,
    traceparent: record.traceparent,
    traceId,
    jaegerUrl,
  };
}

function toText(record: IdempotencyRecord, traceId: string | null, jaegerUrl: string | null): string {
  const fields: Array<[string, string]> = [
    ['scope', JSON.stringify(record.scope)],
    ['key', JSON.stringify(record.key)],
    ['status', describeStatus(record)],
    ['age', `${formatDuration(record.ageMs)} (created ${record.createdAt.toISOString()})`],
    ['expires', record.expiresAt.toISOString()],
    ['attempt', String(record.attempt)],
    ['fingerprint', `${fingerprintHead(record.fingerprint)} (version ${record.fingerprintVersion})`],
  ];
  const steps = Object.keys(record.steps);
  if (steps.length > 0) fields.push(['steps done', steps.join(', ')]);
  fields.push(['correlation ID', record.correlationId ?? '-']);
  fields.push(['trace ID', traceId ?? (record.traceparent ? `- (unreadable traceparent ${record.traceparent})` : '- (no trace was active)')]);
  if (jaegerUrl) fields.push(['Jaeger', jaegerUrl]);
  return formatFields(fields);
}

function describeStatus(record: IdempotencyRecord): string {
  if (record.status === 'in_progress') {
    return record.leaseRemainingMs > 0 ? `in_progress (lease ${formatDuration(record.leaseRemainingMs)} left)` : 'in_progress (lease lapsed: the next retry takes over)';
  }
  if (record.response) return `completed (response ${record.response.status}, replayable)`;
  return 'completed (not replayable: a retry gets 409)';
}
