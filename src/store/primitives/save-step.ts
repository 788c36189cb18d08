import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { Lease } from '../types.js';
import { OWNED_BY_LEASE } from './owned.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

export interface SaveStep extends NamedStatement {
  /** False when the lease was lost: nothing was written. */
  run(db: SqlQueryable, lease: Lease, name: string, result: unknown): Promise<boolean>;
}

/** Stores the result of a completed recovery step under its name ($4), as JSON ($5), in the owned record. */
export function saveStep({ table }: PrimitiveOptions): SaveStep {
  const text = `UPDATE ${qualified(table)} SET steps = steps || jsonb_build_object($4::text, $5::jsonb)
  WHERE ${OWNED_BY_LEASE}
  RETURNING 1`;
  return {
    name: 'save_step',
    text,
    run: async (db, lease, name, result) => (await db.query(text, [lease.scope, lease.key, lease.fence, name, JSON.stringify(result ?? null)])).rows.length === 1,
  };
}
