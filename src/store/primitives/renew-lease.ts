import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { Lease } from '../types.js';
import { OWNED_BY_LEASE } from './owned.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

export interface RenewLease extends NamedStatement {
  /** False when the lease was lost to a takeover. */
  run(db: SqlQueryable, lease: Lease, leaseMs: number): Promise<boolean>;
}

/**
 * Extends the owner's lease by $4 milliseconds from now (the heartbeat of a long handler), and the record's
 * expiry with it when the lease would outlive it.
 */
export function renewLease({ table }: PrimitiveOptions): RenewLease {
  const text = `UPDATE ${qualified(table)} SET
    lease_expires_at = now() + make_interval(secs => $4::float8 / 1000),
    expires_at = greatest(expires_at, now() + make_interval(secs => $4::float8 / 1000))
  WHERE ${OWNED_BY_LEASE}
  RETURNING 1`;
  return {
    name: 'renew_lease',
    text,
    run: async (db, lease, leaseMs) => (await db.query(text, [lease.scope, lease.key, lease.fence, leaseMs])).rows.length === 1,
  };
}
