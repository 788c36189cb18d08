import { defaultPartition } from '../partitioned-schema.js';
import { qualified, type TableName } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

export interface SweepBatch extends NamedStatement {
  /** Deletes at most `batchSize` expired records ($1); resolves to how many it deleted. */
  run(db: SqlQueryable, batchSize: number): Promise<number>;
}

/**
 * One bounded batch of the sweep of `name`. SKIP LOCKED keeps the sweeper out of the way of claims, and a live
 * lease is never swept even past the TTL. The DELETE repeats the condition: without the row locks (`locking`
 * false, for a table distributed by Citus, which refuses FOR UPDATE across shards: 0A000) it is what keeps a
 * record claimed afresh since the batch was chosen.
 */
export function sweepBatch(name: TableName, locking: boolean): SweepBatch {
  const table = qualified(name);
  const doomed = (row: string) => `${row}.expires_at <= now() AND NOT (${row}.status = 'in_progress' AND ${row}.lease_expires_at > now())`;
  const text = `WITH doomed AS (
  SELECT scope, key FROM ${table} t
  WHERE ${doomed('t')}
  LIMIT $1${locking ? '\n  FOR UPDATE SKIP LOCKED' : ''}
), gone AS (
  DELETE FROM ${table} r USING doomed d WHERE r.scope = d.scope AND r.key = d.key AND ${doomed('r')} RETURNING 1
)
SELECT count(*)::int AS deleted FROM gone`;
  return {
    name: locking ? 'sweep' : 'sweep_without_locks',
    text,
    run: async (db, batchSize) => {
      const { rows } = await db.query<{ deleted: number }>(text, [batchSize]);
      return Number(rows[0]?.deleted ?? 0);
    },
  };
}

/**
 * The store's row sweep: of its table, or of a partitioned table's catch-all partition (expired rows elsewhere
 * wait for their partition to be dropped).
 */
export function sweep({ table, partitioned }: PrimitiveOptions, locking: boolean): SweepBatch {
  return sweepBatch(partitioned ? defaultPartition(table) : table, locking);
}
