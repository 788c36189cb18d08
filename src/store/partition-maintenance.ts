import { sqlstateOf } from '../error-code.js';
import { integerAtLeast, integerInRange } from '../validation.js';
import { qualified, type TableName } from './schema.js';
import type { SqlDatabase, SqlQueryable } from './sql-database.js';
import type { CitusProbe } from './citus-probe.js';
import { localLockTimeout, MAX_LOCK_TIMEOUT_MS } from './transaction-control.js';

export const DEFAULT_PARTITION_INTERVAL_SECONDS = 86_400;
export const DEFAULT_PREMADE_PARTITIONS = 2;
export const DEFAULT_PARTITION_LOCK_TIMEOUT_MS = 200;

/** Partitioning of the records table by creation time (`PostgresStore({ partitioning })`). */
export interface PartitioningOptions {
  /**
   * Time range of one partition, in seconds, aligned on the Unix epoch (so a day starts at 00:00 UTC).
   * A partition is dropped once all of its records have expired and none is in progress under a live
   * lease: about one interval plus the TTL after it opened. Keep the number of live partitions small (each
   * claim looks into every one): an interval close to the TTL is a good start.
   * @default 86400 (one day)
   */
  intervalSeconds?: number;
  /**
   * Partitions created ahead of the current one, by `migrate()` and by every `sweep()`. Creating one needs
   * a brief table lock, so several intervals of lead give a busy database many chances to take it.
   * @default 2
   */
  premadePartitions?: number;
  /**
   * Longest wait for the table lock that creating or dropping a partition takes. Claims queue behind a
   * waiting lock, so this bounds the pause they see; on a timeout the step is left to the next sweep.
   * An integer from 1 to 2147483647 (the largest lock_timeout Postgres accepts).
   * @default 200
   */
  lockTimeoutMs?: number;
}

export interface ResolvedPartitioning {
  intervalSeconds: number;
  premadePartitions: number;
  lockTimeoutMs: number;
}

/** What one run of the partition maintenance did. */
export interface PartitionReport {
  /** Partitions created ahead of time. */
  created: string[];
  /** Partitions dropped because every record in them had expired (none under a live lease). */
  dropped: string[];
  /** Records removed with the dropped partitions. */
  droppedRecords: number;
  /** Partitions whose creation or drop was left to the next run (lock timeout, overlapping range). */
  skipped: string[];
}

export function resolvePartitioning(value: boolean | PartitioningOptions | undefined): ResolvedPartitioning | undefined {
  if (value === undefined || value === false) return undefined;
  const options = value === true ? {} : value;
  return {
    intervalSeconds: integerAtLeast(options.intervalSeconds ?? DEFAULT_PARTITION_INTERVAL_SECONDS, 'partitioning.intervalSeconds', 1),
    premadePartitions: integerAtLeast(options.premadePartitions ?? DEFAULT_PREMADE_PARTITIONS, 'partitioning.premadePartitions', 0),
    lockTimeoutMs: integerInRange(options.lockTimeoutMs ?? DEFAULT_PARTITION_LOCK_TIMEOUT_MS, 'partitioning.lockTimeoutMs', 1, MAX_LOCK_TIMEOUT_MS),
  };
}

/**
 * SQLSTATEs that leave a step to the next run: lock_not_available (55P03, the lock timeout), a range
 * that overlaps an existing partition (42P17, after `intervalSeconds` changed), rows of the range
 * already in the catch-all partition (23514; the rows there are swept one by one instead), and another
 * instance's maintenance getting there first: the same partition created a moment earlier (42P07, or
 * 23505 for a duplicate catalog row) or already dropped (42P01).
 */
const UNDEFINED_TABLE = '42P01';
const SKIPPABLE = new Set(['55P03', '42P17', '23514', '42P07', '23505', UNDEFINED_TABLE]);

/**
 * A record that keeps its partition: one not yet expired, or one in progress under a live lease even past
 * its TTL (a claim made with `ttlSeconds` within `leaseMs`, before the first renewal moves the expiry
 * past the lease). Dropping the latter would pull the record from under a handler that is still running,
 * and let a retry run the operation a second time. The row sweep spares the same records.
 */
const LIVE_RECORD = `expires_at > now() OR (status = 'in_progress' AND lease_expires_at > now())`;

/**
 * Creates partitions ahead of time and drops those whose records have all expired. Only partitions this
 * code named (`<table>_p<start epoch seconds>`) are ever dropped.
 */
export class PartitionMaintenance {
  readonly #db: SqlDatabase;
  readonly #name: TableName;
  readonly #options: ResolvedPartitioning;
  readonly #citus: CitusProbe;

  constructor(db: SqlDatabase, name: TableName, options: ResolvedPartitioning, citus: CitusProbe) {
    this.#db = db;
    this.#name = name;
    this.#options = options;
    this.#citus = citus;
  }

  async run(): Promise<PartitionReport> {
    const created = await this.createAhead();
    const dropped = await this.dropExpired();
    return { created: created.created, dropped: dropped.dropped, droppedRecords: dropped.droppedRecords, skipped: [...created.skipped, ...dropped.skipped] };
  }

  /** Creates the current partition and `premadePartitions` after it, where missing. */
  async createAhead(): Promise<Pick<PartitionReport, 'created' | 'skipped'>> {
    const interval = this.#options.intervalSeconds;
    const { rows } = await this.#db.query<{ start: string }>(`SELECT (floor(extract(epoch FROM now()) / $1::float8) * $1::float8)::bigint::text AS start`, [interval]);
    const currentStart = Number(rows[0]!.start);
    const existing = new Set((await timePartitions(this.#db, this.#name)).map((partition) => partition.name));
    const report: Pick<PartitionReport, 'created' | 'skipped'> = { created: [], skipped: [] };
    for (let ahead = 0; ahead <= this.#options.premadePartitions; ahead++) {
      const start = currentStart + ahead * interval;
      const partition = `${this.#name.table}_p${start}`;
      if (existing.has(partition)) continue;
      const done = await this.#underLockTimeout(async (tx) => {
        await tx.query(
          `CREATE TABLE IF NOT EXISTS ${qualified({ schema: this.#name.schema, table: partition })} PARTITION OF ${qualified(this.#name)}
  FOR VALUES FROM (to_timestamp(${start})) TO (to_timestamp(${start + interval}))`,
        );
        return true;
      });
      (done ? report.created : report.skipped).push(partition);
    }
    return report;
  }

  /** Drops every partition whose range has ended and whose records have all expired, none under a live lease. */
  async dropExpired(): Promise<Pick<PartitionReport, 'dropped' | 'droppedRecords' | 'skipped'>> {
    const report: Pick<PartitionReport, 'dropped' | 'droppedRecords' | 'skipped'> = { dropped: [], droppedRecords: 0, skipped: [] };
    for (const partition of await timePartitions(this.#db, this.#name)) {
      if (!partition.ended) continue;
      const table = qualified({ schema: this.#name.schema, table: partition.name });
      // Looked at without a lock first, so a partition that is not ready never makes claims wait.
      const before = await this.#db
        .query<{ live: boolean; records: string }>(
          `SELECT EXISTS (SELECT 1 FROM ${table} WHERE ${LIVE_RECORD}) AS live, (SELECT count(*) FROM ${table})::text AS records`,
        )
        .catch((error: unknown) => {
          if (sqlstateOf(error) === UNDEFINED_TABLE) return undefined; // another instance dropped it just now
          throw error;
        });
      if (!before || before.rows[0]!.live) continue;
      const done = await this.#underLockTimeout(async (tx) => {
        // The parent first, as DROP TABLE would lock it: the same order as every claim, so no deadlock.
        // Holding it, no record of the partition can be renewed between the check and the drop.
        await tx.query(`LOCK TABLE ONLY ${qualified(this.#name)} IN ACCESS EXCLUSIVE MODE`);
        const { rows } = await tx.query<{ live: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${table} WHERE ${LIVE_RECORD}) AS live`);
        if (rows[0]!.live) return false;
        await tx.query(`DROP TABLE ${table}`);
        return true;
      });
      if (done) {
        report.dropped.push(partition.name);
        report.droppedRecords += Number(before.rows[0]!.records);
      } else {
        report.skipped.push(partition.name);
      }
    }
    return report;
  }

  /** Runs DDL in its own transaction with a lock timeout; false when it was left to the next run. */
  async #underLockTimeout(step: (tx: SqlQueryable) => Promise<boolean>): Promise<boolean> {
    const citus = await this.#citus.isCitus();
    const tx = await this.#db.begin();
    try {
      await tx.query(localLockTimeout(this.#options.lockTimeoutMs, citus));
      const done = await step(tx);
      if (done) await tx.commit();
      else await tx.rollback();
      return done;
    } catch (error) {
      await tx.rollback().catch(() => undefined);
      if (SKIPPABLE.has(sqlstateOf(error) ?? '')) return false;
      throw error;
    }
  }
}

/** A time partition this code made (`<table>_p<start epoch seconds>`), its range, and whether the range has ended. */
export interface TimePartition {
  name: string;
  fromSeconds: number;
  toSeconds: number;
  ended: boolean;
}

/**
 * The time partitions of a table, oldest first; the catch-all partition and partitions someone else
 * attached are left out.
 */
export async function timePartitions(db: SqlQueryable, name: TableName): Promise<TimePartition[]> {
  // The bounds are printed and parsed back in the same session, so DateStyle and TimeZone cannot skew them.
  const { rows } = await db.query<{ name: string; from_seconds: string | null; to_seconds: string | null; ended: boolean | null }>(
    `SELECT c.relname AS name,
  extract(epoch FROM b.bound[1]::timestamptz)::text AS from_seconds,
  extract(epoch FROM b.bound[2]::timestamptz)::text AS to_seconds,
  b.bound[2]::timestamptz <= now() AS ended
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS bound) b
WHERE i.inhparent = to_regclass($1)`,
    [qualified(name)],
  );
  const managed = new RegExp(`^${name.table}_p\\d+$`); // a validated identifier: no metacharacters
  return rows
    .filter((row) => managed.test(row.name) && row.from_seconds !== null && row.to_seconds !== null)
    .map((row) => ({ name: row.name, fromSeconds: Number(row.from_seconds), toSeconds: Number(row.to_seconds), ended: row.ended === true }))
    .sort((a, b) => a.fromSeconds - b.fromSeconds);
}
