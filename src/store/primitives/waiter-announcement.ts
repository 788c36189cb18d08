import { waiterLockExpression } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

export interface AnnounceWaiter extends NamedStatement {
  /** The listening session's backend pid when the waiter is announced there, or null. */
  run(listener: SqlQueryable, scope: string, key: string, session: number | null): Promise<number | null>;
}

export interface WithdrawWaiter extends NamedStatement {
  run(listener: SqlQueryable, scope: string, key: string, session: number): Promise<unknown>;
}

/**
 * Announces a duplicate waiting for a key ($1 scope, $2 key) on the listening session: a shared lock on the
 * key, taken without waiting. Returns that session's backend pid as `session` when the lock is held, or NULL
 * when a completion of the key holds it right now (the waiter then re-reads on its own schedule). With $3 the
 * session the waiter holds it on already, nothing is taken twice (a re-announcement).
 */
export function announceWaiter({ table }: PrimitiveOptions): AnnounceWaiter {
  // CASE evaluates its branches in order: the lock is only tried when this session does not hold it yet.
  const text = `SELECT CASE WHEN pg_backend_pid() = $3::int THEN pg_backend_pid()
  WHEN pg_try_advisory_lock_shared(${waiterLockExpression(table, '$1', '$2')}) THEN pg_backend_pid() END AS session`;
  return {
    name: 'announce_waiter',
    text,
    run: async (listener, scope, key, session) => {
      const { rows } = await listener.query<{ session: number | null }>(text, [scope, key, session]);
      return rows[0]?.session ?? null;
    },
  };
}

/** Releases an announcement, only on the session that took it ($3): a new session never holds it. */
export function withdrawWaiter({ table }: PrimitiveOptions): WithdrawWaiter {
  const text = `SELECT CASE WHEN pg_backend_pid() = $3::int THEN pg_advisory_unlock_shared(${waiterLockExpression(table, '$1', '$2')}) END`;
  return { name: 'withdraw_waiter', text, run: (listener, scope, key, session) => listener.query(text, [scope, key, session]) };
}
