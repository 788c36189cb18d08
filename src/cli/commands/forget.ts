import { hostname, userInfo } from 'node:os';
import { keyHash } from '../../telemetry/correlation.js';
import type { IdempotencyRecord } from '../../store/types.js';
import type { Invocation } from '../arguments.js';
import type { Connection } from '../connection.js';
import { CliError } from '../errors.js';
import { EXIT } from '../exit-codes.js';
import { formatFields } from '../format.js';
import type { CommandResult } from './result.js';

type Forget = Extract<Invocation, { command: 'forget' }>;

/**
 * Deletes one record so that its key runs again on its next request, in every process (the store notifies
 * their replay caches). Prints what it removed, and leaves an audit line on stderr (`audit`): who, when,
 * which record by correlation ID and key hash, never the key or the scope, since such lines are collected.
 * Where the CLI runs under an OpenTelemetry SDK, the store also adds an `idempotency.forget` event to the active span.
 */
export async function forget(invocation: Forget, connection: Connection, audit: (line: string) => void): Promise<CommandResult> {
  const result = await connection.store.forget(invocation.scope, invocation.key, { force: invocation.force });
  const named = `scope ${JSON.stringify(invocation.scope)} and key ${JSON.stringify(invocation.key)}`;
  if (result.kind === 'not_found') throw new CliError('not_found', `no record for ${named} (never claimed, released, or expired and swept)`, EXIT.NOT_FOUND);
  if (result.kind === 'in_progress') {
    const why = result.leaseLapsed
      ? 'its lease has lapsed (its worker is gone): add --force to delete it'
      : `its handler is running (lease ${Math.ceil(result.record.leaseRemainingMs / 1000)} s left, or its transaction holds the row): it is never deleted; wait for it to complete`;
    throw new CliError('in_progress', `refused: the record for ${named} is in progress; ${why}`, EXIT.REFUSED);
  }
  const { record } = result;
  audit(auditLine(record, invocation.key));
  const json = {
    forgotten: true,
    scope: record.scope,
    key: record.key,
    status: record.status,
    responseStatus: record.response?.status ?? null,
    attempt: record.attempt,
    createdAt: record.createdAt.toISOString(),
    correlationId: record.correlationId,
  };
  const text = formatFields([
    ['forgotten', `scope ${JSON.stringify(record.scope)}, key ${JSON.stringify(record.key)}`],
    ['was', record.status === 'completed' ? `completed (response ${record.response?.status ?? 'not replayable'})` : 'in_progress (lease lapsed, --force)'],
    ['attempt', String(record.attempt)],
    ['created', record.createdAt.toISOString()],
    ['correlation ID', record.correlationId ?? '-'],
    ['next request', 'runs the operation again'],
  ]);
  return { exitCode: EXIT.OK, json, text };
}

/** One logfmt line: what an operator removed, by whom; the key only as its hash. */
function auditLine(record: IdempotencyRecord, key: string): string {
  const fields: Record<string, string> = {
    at: new Date().toISOString(),
    audit: 'forget',
    user: safeUser(),
    host: hostname(),
    correlation_id: record.correlationId ?? '-',
    key_hash: keyHash(key),
    status: record.status,
    attempt: String(record.attempt),
  };
  return `koa-idempotency ${Object.entries(fields)
    .map(([name, value]) => `${name}=${/^[\w.:@+-]+$/.test(value) ? value : JSON.stringify(value)}`)
    .join(' ')}\n`;
}

/** The OS user running the CLI; a container user without a passwd entry makes userInfo() throw. */
function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}
