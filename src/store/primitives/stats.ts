import { qualified } from '../schema.js';
import type { SqlQueryable } from '../sql-database.js';
import type { StoreStats } from '../types.js';
import type { NamedStatement, PrimitiveOptions } from './statement.js';

interface StatsRow {
  status: StoreStats['status'];
  records: number;
  oldest_age_ms: number;
  lapsed_leases: number;
}

export interface Stats extends NamedStatement {
  run(db: SqlQueryable): Promise<StoreStats[]>;
}

/** Records by status, the age of the oldest, and the leases that lapsed without a completion (crashed workers). */
export function stats({ table }: PrimitiveOptions): Stats {
  const text = `SELECT status, count(*)::int AS records,
  (extract(epoch FROM now() - min(created_at)) * 1000)::float8 AS oldest_age_ms,
  count(*) FILTER (WHERE status = 'in_progress' AND lease_expires_at <= now())::int AS lapsed_leases
FROM ${qualified(table)} GROUP BY status ORDER BY status`;
  return {
    name: 'stats',
    text,
    run: async (db) => {
      const { rows } = await db.query<StatsRow>(text);
      return rows.map((row) => ({
        status: row.status,
        records: Number(row.records),
        oldestAgeMs: Number(row.oldest_age_ms),
        lapsedLeases: Number(row.lapsed_leases),
      }));
    },
  };
}
