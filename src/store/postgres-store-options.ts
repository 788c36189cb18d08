import { diag } from '@opentelemetry/api';
import type { Pool } from 'pg';
import { IdempotencyConfigError } from '../errors.js';
import { callListener } from '../hooks.js';
import { MAX_TIMER_MS, nonNegativeInteger, nonNegativeNumber, numberInRange, optionalFunction, positiveInteger } from '../validation.js';
import { tableNameOf } from './migration.js';
import { resolvePartitioning, type PartitioningOptions, type ResolvedPartitioning } from './partition-maintenance.js';
import { fromPgPoolPreparing } from './pg-database.js';
import { fromPGlite, type PGliteLike } from './pglite-database.js';
import type { NamedStatement } from './primitives/statement.js';
import type { TableName } from './schema.js';
import type { SqlDatabase } from './sql-database.js';
import { MAX_LOCK_TIMEOUT_MS } from './transaction-control.js';

export const DEFAULT_POLL_INTERVAL_MS = 100;
/** One session holding as many locks as Postgres sizes its shared lock table for per connection (see maxAnnouncedWaiters). */
export const DEFAULT_MAX_ANNOUNCED_WAITERS = 64;
export const DEFAULT_REPLAY_CACHE_ENTRIES = 1_000;
export const DEFAULT_REPLAY_CACHE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_SWEEP_BATCH_SIZE = 1_000;
export const DEFAULT_SWEEP_PAUSE_MS = 50;
export const DEFAULT_LOCK_TIMEOUT_MS = 5_000;

export interface PostgresStoreOptions {
  /** A node-postgres pool (the store never ends it). Give exactly one of `pool`, `pglite`, `database`. */
  pool?: Pool;
  /** An embedded PGlite instance (the store never closes it). */
  pglite?: PGliteLike;
  /** Any other adapter implementing the store's SQL surface. */
  database?: SqlDatabase;
  /**
   * With `pool`: run the store's statements as named prepared statements, planned once per connection
   * instead of on every call (the claim's planning costs more than its execution). Turn it off behind a
   * transaction-pooling PgBouncer older than 1.21, which cannot carry prepared statements.
   * @default true
   */
  preparedStatements?: boolean;
  /**
   * Schema of the records table (validated identifier).
   * @default 'public'
   */
  schema?: string;
  /**
   * Name of the records table (validated identifier).
   * @default 'idempotency_records'
   */
  table?: string;
  /**
   * How waiting duplicates learn that the first request finished: `'notify'` uses LISTEN/NOTIFY on one
   * shared connection (needs a session-mode connection, not a transaction-pooling PgBouncer);
   * `'poll'` re-reads the record every `pollIntervalMs`.
   * @default 'notify'
   */
  waitStrategy?: 'notify' | 'poll';
  /**
   * Poll interval of the `'poll'` wait strategy.
   * @default 100
   */
  pollIntervalMs?: number;
  /**
   * Most waiting duplicates of this store that announce themselves at once, each with a shared advisory
   * lock on the listening session (completions notify only while one is held). Past it, a waiter re-reads
   * the record every `pollIntervalMs` instead. Every held lock takes a slot of Postgres' shared lock table,
   * sized `max_locks_per_transaction` (64) x `max_connections` for the whole cluster: uncapped, a process
   * with ~1,000 waiting keys made every session fail with 53200 "out of shared memory". 0 announces none.
   * @default 64
   */
  maxAnnouncedWaiters?: number;
  /**
   * Completed records kept in memory to answer replays without SQL. 0 turns the cache off.
   * @default 1000
   */
  replayCacheEntries?: number;
  /**
   * Upper bound on the response bytes held by the replay cache.
   * @default 16777216 (16 MiB)
   */
  replayCacheBytes?: number;
  /**
   * Transactional mode: longest wait for a row lock before the claim fails (then 503, retryable),
   * so a stuck transaction cannot pin pool clients indefinitely. From 1 to 2147483647 (the largest
   * lock_timeout Postgres accepts).
   * @default 5000
   */
  lockTimeoutMs?: number;
  /**
   * Run `sweep()` every this many milliseconds; 0 turns the periodic sweeper off. Its timer never keeps
   * the process alive. Errors are reported through `onSweepError`. At most 2147483647 (the longest Node timer).
   * @default 0
   */
  sweepIntervalMs?: number;
  /**
   * Rows deleted per sweep statement (an integer); each batch is its own short transaction.
   * @default 1000
   */
  sweepBatchSize?: number;
  /**
   * Pause between two sweep batches. Deleting expired rows writes WAL that every claim's commit then waits
   * behind; pausing keeps a large backlog from lifting claim latency (measured: a million rows back to back
   * raised claim p99 ×4, paced at 50 ms ×2 to ×3.4 with the median unchanged).
   * @default 50
   */
  sweepPauseMs?: number;
  /**
   * Partition the records table by creation time, so that expiry drops whole partitions instead of
   * deleting rows (for high volume: see docs/performance.md). `true` takes the defaults of
   * `PartitioningOptions`. A table is created partitioned or not by `migrate()` and never converted: to
   * switch, point the store at a new `table`. Partitions are created ahead and dropped by `sweep()`, so
   * run it periodically (`sweepIntervalMs`, or the CLI's `sweep` from cron).
   * @default false (one plain table, expired rows deleted in batches)
   */
  partitioning?: boolean | PartitioningOptions;
  /**
   * Called when a periodic sweep fails, a denied partition maintenance included (its expired rows are
   * still swept). Failed sweep steps are also recorded on the store operation metric with their `error.type`.
   * @default reports the error through the OpenTelemetry `diag` logger
   */
  onSweepError?: (error: unknown) => void;
}

/** The options of a PostgresStore, validated and with their defaults. */
export interface ResolvedStoreOptions {
  table: TableName;
  partitioning: ResolvedPartitioning | undefined;
  waitStrategy: 'notify' | 'poll';
  pollIntervalMs: number;
  maxAnnouncedWaiters: number;
  replayCacheEntries: number;
  replayCacheBytes: number;
  lockTimeoutMs: number;
  sweepIntervalMs: number;
  sweepBatchSize: number;
  sweepPauseMs: number;
  /** The application's `onSweepError`, guarded: its own failure is reported, never an unhandled rejection. */
  onSweepError: (error: unknown) => void;
}

export function resolveStoreOptions(options: PostgresStoreOptions): ResolvedStoreOptions {
  const waitStrategy = options.waitStrategy ?? 'notify';
  if (waitStrategy !== 'notify' && waitStrategy !== 'poll') throw new IdempotencyConfigError(`waitStrategy must be 'notify' or 'poll'`);
  const onSweepError = optionalFunction(options.onSweepError, 'onSweepError');
  return {
    table: tableNameOf(options),
    partitioning: resolvePartitioning(options.partitioning),
    waitStrategy,
    // Every timer stays within what setTimeout honours: Node runs a longer one after 1 ms, a loop with no pause.
    pollIntervalMs: numberInRange(options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS, 'pollIntervalMs', 1, MAX_TIMER_MS),
    maxAnnouncedWaiters: nonNegativeInteger(options.maxAnnouncedWaiters ?? DEFAULT_MAX_ANNOUNCED_WAITERS, 'maxAnnouncedWaiters'),
    replayCacheEntries: nonNegativeNumber(options.replayCacheEntries ?? DEFAULT_REPLAY_CACHE_ENTRIES, 'replayCacheEntries'),
    replayCacheBytes: nonNegativeNumber(options.replayCacheBytes ?? DEFAULT_REPLAY_CACHE_BYTES, 'replayCacheBytes'),
    // SET lock_timeout takes whole milliseconds, reads 0 as "no timeout" (a value below 1 would round to it)
    // and refuses more than MAX_LOCK_TIMEOUT_MS.
    lockTimeoutMs: numberInRange(options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS, 'lockTimeoutMs', 1, MAX_LOCK_TIMEOUT_MS),
    sweepIntervalMs: numberInRange(options.sweepIntervalMs ?? 0, 'sweepIntervalMs', 0, MAX_TIMER_MS),
    // A count of rows: Postgres reads the LIMIT as a bigint and refuses a fraction.
    sweepBatchSize: positiveInteger(options.sweepBatchSize ?? DEFAULT_SWEEP_BATCH_SIZE, 'sweepBatchSize'),
    sweepPauseMs: numberInRange(options.sweepPauseMs ?? DEFAULT_SWEEP_PAUSE_MS, 'sweepPauseMs', 0, MAX_TIMER_MS),
    onSweepError: onSweepError ? (error) => callListener('onSweepError', () => onSweepError(error), 'the sweep failure it was given is lost') : reportSweepError,
  };
}

/** The database adapter for the given source; `statements` are prepared on each pg connection. */
export function openDatabase(options: PostgresStoreOptions, statements: Iterable<NamedStatement>): SqlDatabase {
  const given = [options.pool, options.pglite, options.database].filter((value) => value !== undefined);
  if (given.length !== 1) throw new IdempotencyConfigError('PostgresStore needs exactly one of `pool`, `pglite` or `database`');
  if (options.pool) return fromPgPoolPreparing(options.pool, (options.preparedStatements ?? true) ? statements : []);
  if (options.pglite) return fromPGlite(options.pglite);
  return options.database!;
}

/** Whether the store's database has a listening session of its own, where waiters announce themselves. */
export function announcesWaiters(options: PostgresStoreOptions): boolean {
  if (options.pool) return true;
  if (options.pglite) return false;
  return typeof options.database?.queryOnListener === 'function';
}

/** The default `onSweepError`: a periodic sweep has no caller to throw to, so the failure goes to diag. */
function reportSweepError(error: unknown): void {
  diag.error('koa-idempotency: the periodic sweep failed', error);
}
