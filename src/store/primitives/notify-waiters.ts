import { waiterLockExpression, type TableName } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import { notifyChannel, notifyId } from '../waiters.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

/**
 * Joined to the row a write returns before it notifies: a join that never matches, which Postgres plans as nothing.
 * On Citus the catalog table in it is local, so the query cannot go whole to the worker holding the shard: the write
 * runs there as a subplan, and NOTIFY and the waiter-lock test on the coordinator, where the store LISTENs.
 */
export const WHERE_THE_LISTENERS_ARE = 'LEFT JOIN pg_catalog.pg_am coordinator_only ON false';

/**
 * NOTIFY of one key's waiters ($1 scope, $2 key; channel and payload as given), or, with `'whenWaited'`, only
 * if a waiter holds the key's waiter lock. Taking that lock instead holds it until the transaction ends, so
 * a waiter arriving in between fails to announce itself (it never waits for the lock: the listening session
 * serves every waiter of the process) and re-reads on its own schedule. One row either way. The NOTIFY
 * only hastens a wake-up; a waiter's bounded re-reads are what guarantee it (claim-settling.ts).
 */
export function notifyExpression(name: TableName, notify: PrimitiveOptions['notify'], channel: string, payload: string): string {
  if (notify === 'always') return `pg_notify(${channel}, ${payload})`;
  return `CASE WHEN pg_try_advisory_xact_lock(${waiterLockExpression(name, '$1', '$2')}) THEN NULL ELSE pg_notify(${channel}, ${payload}) END`;
}

export interface NotifyWaiters extends NamedStatement {
  run(db: SqlQueryable, scope: string, key: string): Promise<unknown>;
}

/** Wakes the waiters of a key whose claim was rolled back: $1 scope, $2 key, $3 channel, $4 payload. */
export function notifyWaiters({ table, notify }: PrimitiveOptions): NotifyWaiters {
  // The key's two parameters typed here: the 'always' expression does not read them.
  const text = `SELECT ${notifyExpression(table, notify, '$3', '$4')} FROM (VALUES ($1::text, $2::text)) AS waited (scope, key)`;
  const channel = notifyChannel(table);
  return { name: 'notify_waiters', text, run: (db, scope, key) => db.query(text, [scope, key, channel, notifyId(scope, key)]) };
}
