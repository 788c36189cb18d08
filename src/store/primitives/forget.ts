import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { IdempotencyRecord } from '../types.js';
import { notifyChannel } from '../waiters.js';
import { WHERE_THE_LISTENERS_ARE } from './notify-waiters.js';
import { RECORD_COLUMNS, toRecord, type RecordRow } from './record-row.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

/** Which record to forget; `notice` is the payload of the NOTIFY sent with the deletion, in the same statement. */
export interface ForgetRequest {
  scope: string;
  key: string;
  force: boolean;
  notice: string;
}

export interface Forget extends NamedStatement {
  /** The record it deleted, or undefined when it deleted none (find() then tells why). */
  run(db: SqlQueryable, request: ForgetRequest): Promise<IdempotencyRecord | undefined>;
}

/**
 * Deletes a completed record ($1 scope, $2 key), or with `force` ($3) an in-progress one whose lease has
 * lapsed, and returns it, with a NOTIFY on the store's channel ($4, payload $5). A live lease is never deleted:
 * its handler is running and would complete into nothing, or, in transactional mode, its row lock is held
 * (SKIP LOCKED: the statement never waits for a running handler). The NOTIFY is outside the DELETE, where
 * Citus allows it (notify-waiters.ts).
 */
export function forget({ table }: PrimitiveOptions): Forget {
  const name = qualified(table);
  const text = `WITH doomed AS (
  SELECT scope, key, created_at FROM ${name}
  WHERE scope = $1 AND key = $2 AND (status = 'completed' OR ($3::boolean AND lease_expires_at <= now()))
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM ${name} r USING doomed d WHERE r.scope = d.scope AND r.key = d.key AND r.created_at = d.created_at
  RETURNING ${RECORD_COLUMNS}
)
SELECT gone.*, pg_notify($4, $5)::text AS notified FROM gone ${WHERE_THE_LISTENERS_ARE}`;
  const channel = notifyChannel(table);
  return {
    name: 'forget',
    text,
    run: async (db, { scope, key, force, notice }) => {
      const { rows } = await db.query<RecordRow>(text, [scope, key, force, channel, notice]);
      return rows[0] && toRecord(rows[0]);
    },
  };
}
