import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { IdempotencyRecord } from '../types.js';
import { RECORD_COLUMNS, toRecord, type RecordRow } from './record-row.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

export interface Find extends NamedStatement {
  run(db: SqlQueryable, scope: string, key: string): Promise<IdempotencyRecord | undefined>;
}

/** Reads one record as it stands ($1 scope, $2 key), whatever its state: for operators and tests, never a claim. */
export function find({ table }: PrimitiveOptions): Find {
  const text = `SELECT ${RECORD_COLUMNS} FROM ${qualified(table)} r WHERE r.scope = $1 AND r.key = $2`;
  return {
    name: 'find',
    text,
    run: async (db, scope, key) => {
      const { rows } = await db.query<RecordRow>(text, [scope, key]);
      return rows[0] && toRecord(rows[0]);
    },
  };
}
