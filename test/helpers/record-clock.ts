import type { SqlQueryable } from '../../src/index.js';
import { until } from './events.js';

/**
 * Resolves once every record of `table` (schema-qualified and quoted), or those of `keys`, has expired by Postgres's clock, the
 * clock the store's sweep and partition maintenance read. A test that lets records expire waits for that,
 * rather than for a local timer that may run ahead of or behind the database.
 *
 * With `intervalSeconds` partitions by `created_at`, an expired record's partition has ended too: its range
 * ends at most one interval after `created_at`, no later than `expires_at` whenever the TTL is at least one interval.
 */
export async function recordsExpired(sql: SqlQueryable, table: string, keys?: string[], timeoutMs = 10_000): Promise<void> {
  await until(
    async () => {
      const text = `SELECT count(*)::int AS live FROM ${table} WHERE expires_at >= now() AND ($1::text[] IS NULL OR key = ANY($1))`;
      const { rows } = await sql.query<{ live: number }>(text, [keys ?? null]);
      return Number(rows[0]!.live) === 0 ? true : undefined;
    },
    `every record of ${table} to expire`,
    timeoutMs,
  );
}

/** Resolves once the lease of `key`'s record in `table` has run out by Postgres's clock: a takeover may then happen. */
export async function leaseLapsed(sql: SqlQueryable, table: string, key: string, timeoutMs = 10_000): Promise<void> {
  await until(
    async () => {
      const { rows } = await sql.query<{ lapsed: boolean }>(`SELECT lease_expires_at < now() AS lapsed FROM ${table} WHERE key = $1`, [key]);
      return rows[0]?.lapsed ? true : undefined;
    },
    `the lease of ${key} to run out`,
    timeoutMs,
  );
}
