import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { IdempotencyRecord } from '../types.js';
import { RECORD_COLUMNS, toRecord, type RecordRow } from './record-row.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

export interface FindByCorrelationTag extends NamedStatement {
  run(db: SqlQueryable, tag: string): Promise<IdempotencyRecord[]>;
}

/**
 * The records whose correlation ID carries the tag $1 (the first 12 hex digits of its SHA-256, as problem
 * occurrence IDs carry it; see problem-instance.ts), the ten newest. No index serves this: it reads the whole
 * table, which is fine for an operator looking up one support case, and never done on a request's path.
 */
export function findByCorrelationTag({ table }: PrimitiveOptions): FindByCorrelationTag {
  const text = `SELECT ${RECORD_COLUMNS} FROM ${qualified(table)} r
WHERE r.correlation_id IS NOT NULL AND left(encode(sha256(convert_to(r.correlation_id, 'UTF8')), 'hex'), 12) = $1
ORDER BY r.created_at DESC LIMIT 10`;
  return {
    name: 'find_by_correlation_tag',
    text,
    run: async (db, tag) => (await db.query<RecordRow>(text, [tag])).rows.map(toRecord),
  };
}
