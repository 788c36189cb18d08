import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { Lease } from '../types.js';
import { notifyChannel, notifyId } from '../waiters.js';
import { notifyExpression, WHERE_THE_LISTENERS_ARE } from './notify-waiters.js';
import { OWNED_BY_LEASE } from './owned.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

export interface Release extends NamedStatement {
  /** A lost lease is not an error: the record is someone else's now, and stays. */
  run(db: SqlQueryable, lease: Lease): Promise<unknown>;
}

/**
 * Deletes the owned record so that the client's retry runs afresh (a thrown error or a 5xx), and wakes the
 * key's waiters: $1 to $3 the lease, $4 channel, $5 payload.
 */
export function release({ table, notify }: PrimitiveOptions): Release {
  const text = `WITH gone AS (
  DELETE FROM ${qualified(table)} WHERE ${OWNED_BY_LEASE} RETURNING 1
)
SELECT ${notifyExpression(table, notify, '$4', '$5')} FROM gone ${WHERE_THE_LISTENERS_ARE}`;
  const channel = notifyChannel(table);
  return {
    name: 'release',
    text,
    run: (db, lease) => db.query(text, [lease.scope, lease.key, lease.fence, channel, notifyId(lease.scope, lease.key)]),
  };
}
