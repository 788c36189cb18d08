import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { diag } from '@opentelemetry/api';
import type { Pool } from 'pg';
import type { PGliteInterface } from '@electric-sql/pglite';
import { FencedError, IdempotencyConfigError } from '../errors.js';
import { libraryInstruments, timeStoreOperation } from '../telemetry/metrics.js';
import { CompletionRolledBackError } from './completion-rolled-back.js';
import { newFence } from './fences.js';
import { assertIdentifier } from './identifiers.js';
import { fromPgPool } from './pg-database.js';
import { PartitionMaintenance, resolvePartitioning, type PartitioningOptions, type PartitionReport } from './partition-maintenance.js';
import { partitionedSchemaStatements } from './partitioned-schema.js';
import { fromPGlite } from './pglite-database.js';
import { ReplayCache } from './replay-cache.js';
import { DEFAULT_SCHEMA, DEFAULT_TABLE, qualified, schemaSql, tableLayout, type TableName } from './schema.js';
import type { SqlDatabase, SqlQueryable, Unsubscribe } from './sql-database.js';
import { buildStatements, type Statements } from './statements.js';
import { claimTransactionEnded, isClaimTransaction, openClaimTransaction, TransactionControlError } from './transaction-control.js';
import type {
  ChangeWatch,
  ClaimRequest,
  ClaimResult,
  Completion,
  IdempotencyRecord,
  IdempotencyStore,
  Lease,
  StoreStats,
  TransactionalClaim,
} from './types.js';
import { Waiters } from './waiters.js';

export const DEFAULT_POLL_INTERVAL_MS = 100;
export const DEFAULT_REPLAY_CACHE_ENTRIES = 1_000;
export const DEFAULT_REPLAY_CACHE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_SWEEP_BATCH_SIZE = 1_000;
export const DEFAULT_SWEEP_PAUSE_MS = 50;
export const DEFAULT_LOCK_TIMEOUT_MS = 5_000;

/** A fresh snapshot sees a row committed a moment after the previous one was taken; a few tries suffice. */
const CLAIM_ATTEMPTS = 5;

export interface PostgresStoreOptions {
  /** A node-postgres pool (the store never ends it). Give exactly one of `pool`, `pglite`, `database`. */
  pool?: Pool;
  /** An embedded PGlite instance (the store never closes it). */
  pglite?: PGliteInterface;
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
   * so a stuck transaction cannot pin pool clients indefinitely.
   * @default 5000
   */
  lockTimeoutMs?: number;
  /**
   * Run `sweep()` every this many milliseconds; 0 turns the periodic sweeper off. Its timer never keeps
   * the process alive. Errors are reported through `onSweepError`.
   * @default 0
   */
  sweepIntervalMs?: number;
  /**
   * Rows deleted per sweep statement; each batch is its own short transaction.
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

export interface SweepOptions {
  /** Rows deleted per statement. @default the store's `sweepBatchSize` */
  batchSize?: number;
  /** Stop after this many batches. @default until none is left */
  maxBatches?: number;
  /** Pause between two batches. @default the store's `sweepPauseMs` */
  pauseMs?: number;
}

/** What one sweep removed: records in all, and the partition maintenance's report on a partitioned table. */
export interface SweepReport {
  /** Records deleted row by row plus the records of the dropped partitions. */
  deleted: number;
  partitions: PartitionReport | undefined;
}

/**
 * The Postgres store: records in one table, claims in one statement, fenced leases, LISTEN/NOTIFY for
 * waiting duplicates. Works over node-postgres and over PGlite with the same SQL.
 */
export class PostgresStore implements IdempotencyStore {
  readonly table: TableName;
  readonly #db: SqlDatabase;
  readonly #sql: Statements;
  readonly #cache: ReplayCache;
  readonly #waiters: Waiters;
  readonly #lockTimeoutMs: number;
  readonly #sweepBatchSize: number;
  readonly #sweepPauseMs: number;
  readonly #partitions: PartitionMaintenance | undefined;
  /** Partitioned tables: the row sweep of every partition through the parent, for when maintenance failed. */
  readonly #sweepAllPartitions: string | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping = false;

  constructor(options: PostgresStoreOptions) {
    this.table = {
      schema: assertIdentifier(options.schema ?? DEFAULT_SCHEMA, 'schema'),
      table: assertIdentifier(options.table ?? DEFAULT_TABLE, 'table'),
    };
    const partitioning = resolvePartitioning(options.partitioning);
    const notify = announcesWaiters(options) ? 'whenWaited' : 'always';
    this.#sql = buildStatements(this.table, { partitioned: partitioning !== undefined, notify });
    this.#db = pickDatabase(options, this.#sql);
    this.#partitions = partitioning && new PartitionMaintenance(this.#db, this.table, partitioning);
    this.#sweepAllPartitions = partitioning && buildStatements(this.table, { partitioned: false, notify }).sweep;
    this.#cache = new ReplayCache(
      nonNegative(options.replayCacheEntries ?? DEFAULT_REPLAY_CACHE_ENTRIES, 'replayCacheEntries'),
      nonNegative(options.replayCacheBytes ?? DEFAULT_REPLAY_CACHE_BYTES, 'replayCacheBytes'),
    );
    this.#lockTimeoutMs = atLeastOneMs(options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS, 'lockTimeoutMs');
    this.#sweepBatchSize = positive(options.sweepBatchSize ?? DEFAULT_SWEEP_BATCH_SIZE, 'sweepBatchSize');
    this.#sweepPauseMs = nonNegative(options.sweepPauseMs ?? DEFAULT_SWEEP_PAUSE_MS, 'sweepPauseMs');
    const strategy = options.waitStrategy ?? 'notify';
    if (strategy !== 'notify' && strategy !== 'poll') throw new IdempotencyConfigError(`waitStrategy must be 'notify' or 'poll'`);
    this.#waiters = new Waiters({
      strategy,
      pollIntervalMs: positive(options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS, 'pollIntervalMs'),
      channel: notifyChannel(this.table),
      listen: (channel, onNotify) => this.#db.listen(channel, onNotify),
    });
    const sweepIntervalMs = nonNegative(options.sweepIntervalMs ?? 0, 'sweepIntervalMs');
    if (sweepIntervalMs > 0) {
      const onError = options.onSweepError ?? reportSweepError;
      this.#sweepTimer = setInterval(() => void this.#sweepPeriodically().catch(onError), sweepIntervalMs);
      this.#sweepTimer.unref();
    }
  }

  /**
   * Creates the schema, sequence, table and index if missing (partitioned: also the catch-all partition,
   * the claim function and the partitions ahead). Safe to run on every deploy.
   */
  async migrate(): Promise<void> {
    await this.#assertTableKind();
    for (const statement of this.#migrationStatements()) await this.#db.query(statement);
    await this.#partitions?.createAhead();
  }

  /**
   * The migration script for this store's table, for teams that apply SQL with their own tool. A
   * partitioned table gets its time partitions from `sweep()`; until then records go to its catch-all one.
   */
  migrationSql(): string {
    return this.#partitions ? `${this.#migrationStatements().join(';\n\n')};\n` : schemaSql(this.table);
  }

  /**
   * Lease mode: a new key is one plain INSERT; a key already taken (rare outside replays, which the replay
   * cache mostly answers) runs the full claim, which takes over an expired or lapsed record, or returns it.
   */
  async claim(request: ClaimRequest): Promise<ClaimResult> {
    const cached = this.#cache.get(request.scope, request.key);
    if (cached) return { kind: 'existing', record: cached };
    return timeStoreOperation('claim', async () => {
      const fence = newFence();
      if (this.#sql.claimNew) {
        const { rowCount } = await this.#db.query(this.#sql.claimNew, [...claimParams(request), fence]);
        if (rowCount === 1) return claimedNew(request, fence);
      }
      for (let attempt = 1; ; attempt++) {
        const { rows } = await this.#db.query<RecordRow>(this.#sql.claim, this.#fullClaimParams(request, fence));
        const row = rows[0];
        if (row) return this.#toClaimResult(row, request);
        if (attempt === CLAIM_ATTEMPTS) throw new Error('the claim found neither a free key nor a record after retries');
      }
    });
  }

  async claimInTransaction(request: ClaimRequest): Promise<TransactionalClaim> {
    const cached = this.#cache.get(request.scope, request.key);
    if (cached) return { kind: 'existing', record: cached };
    const fence = newFence();
    const tx = await timeStoreOperation('begin', () => this.#db.begin());
    try {
      // The fence marks the transaction: random, and this claim's own.
      const mark = fence;
      await openClaimTransaction(tx, this.#lockTimeoutMs, mark);
      const result = await timeStoreOperation('claim', () => this.#claimOn(tx, request, fence));
      if (result.kind !== 'claimed') {
        await tx.rollback();
        return result;
      }
      const { lease } = result;
      return {
        kind: 'claimed',
        lease,
        record: result.record,
        db: tx,
        commit: async (completion) => {
          // Until COMMIT is sent, a failure ends in a rollback: a known outcome, unlike a failed or lost COMMIT.
          let committing = false;
          await timeStoreOperation('complete', async () => {
            try {
              await this.#completeOn(tx, lease, completion, mark);
            } catch (error) {
              // No record updated: fenced, or the claim's transaction ended early (the statement only finds the
              // record while its mark is set), in which case a completion alone would be a replayable success for
              // half an operation. Told apart here, off the path of a completion that succeeds.
              const ended = error instanceof FencedError && !(await isClaimTransaction(tx, mark).catch(() => true));
              await tx.rollback().catch(() => undefined);
              if (!ended) throw error;
              await this.#keepAsExecuted(lease, completion.replayable ? completion.response.status : completion.status);
              throw claimTransactionEnded();
            }
            committing = true;
            await tx.commit();
          }).catch((error: unknown) => {
            // A TransactionControlError is no rollback: the handler committed its writes early (see there).
            throw committing || error instanceof TransactionControlError ? error : new CompletionRolledBackError(error);
          });
        },
        rollback: async () => {
          await timeStoreOperation('release', async () => {
            // A check that fails finds the claim's transaction aborted by a failed statement: still open.
            const ended = !(await isClaimTransaction(tx, mark).catch(() => true));
            await tx.rollback();
            if (!ended) return;
            await this.#keepAsExecuted(lease, 500);
            throw claimTransactionEnded();
          });
          // A rollback sends no notification; wake waiters so they retry the claim at once.
          await this.#db
            .query(this.#sql.notifyWaiters, [lease.scope, lease.key, this.#waiters.channel, notifyId(lease.scope, lease.key)])
            .catch(() => undefined);
        },
      };
    } catch (error) {
      await tx.rollback().catch(() => undefined);
      throw error;
    }
  }

  async complete(lease: Lease, completion: Completion): Promise<void> {
    await timeStoreOperation('complete', () => this.#completeOn(this.#db, lease, completion));
  }

  async release(lease: Lease): Promise<void> {
    await timeStoreOperation('release', () =>
      this.#db.query(this.#sql.release, [lease.scope, lease.key, lease.fence, this.#waiters.channel, notifyId(lease.scope, lease.key)]),
    );
  }

  async renewLease(lease: Lease, leaseMs: number): Promise<boolean> {
    const { rows } = await timeStoreOperation('renew', () =>
      this.#db.query(this.#sql.renewLease, [lease.scope, lease.key, lease.fence, leaseMs]),
    );
    return rows.length === 1;
  }

  async saveStep(lease: Lease, name: string, result: unknown, db: SqlQueryable = this.#db): Promise<void> {
    const { rows } = await timeStoreOperation('step', () =>
      db.query(this.#sql.saveStep, [lease.scope, lease.key, lease.fence, name, JSON.stringify(result ?? null)]),
    );
    if (rows.length !== 1) throw new FencedError(lease.fence);
  }

  /**
   * With the 'notify' strategy on a database with a listening session of its own, the waiter also announces
   * itself there (a shared lock on the key) before the caller re-reads the record: completions notify only
   * while someone waits. One that cannot announce itself is woken by its timeout instead.
   */
  async watch(scope: string, key: string): Promise<ChangeWatch> {
    const watch = await this.#waiters.watch(notifyId(scope, key));
    const queryOnListener = this.#waiters.strategy === 'notify' ? this.#db.queryOnListener?.bind(this.#db) : undefined;
    if (!queryOnListener) return watch;
    const announced = await queryOnListener(this.#sql.announceWaiter, [scope, key]).then(
      () => true,
      (error: unknown) => {
        diag.warn('koa-idempotency: a waiting duplicate could not announce itself; it will be woken by its timeout', error);
        return false;
      },
    );
    return {
      next: (timeoutMs) => watch.next(timeoutMs),
      close: () => {
        watch.close();
        if (announced) void queryOnListener(this.#sql.withdrawWaiter, [scope, key]).catch(() => undefined);
      },
    };
  }

  async find(scope: string, key: string): Promise<IdempotencyRecord | undefined> {
    const { rows } = await timeStoreOperation('find', () => this.#db.query<RecordRow>(this.#sql.find, [scope, key]));
    return rows[0] && toRecord(rows[0]);
  }

  /**
   * Deletes expired records in bounded batches; returns how many were deleted. A partitioned table first
   * creates the partitions ahead and drops those whose records have all expired, then sweeps its catch-all
   * partition row by row. When the partition maintenance fails (42501 for a role that does not own the
   * table), every partition is swept row by row instead, and the maintenance's error is thrown after that.
   */
  async sweep(options: SweepOptions = {}): Promise<number> {
    return (await this.sweepReport(options)).deleted;
  }

  /** sweep(), telling also what the partition maintenance did (for a partitioned table). */
  async sweepReport(options: SweepOptions = {}): Promise<SweepReport> {
    if (!this.#partitions) return { deleted: await this.#sweepRows(this.#sql.sweep, options), partitions: undefined };
    let partitions: PartitionReport;
    try {
      partitions = await this.maintainPartitions();
    } catch (error) {
      // No partition is dropped, and none is made ahead, until the maintenance works again: records still
      // go at their TTL, deleted row by row in whichever partition they are (through the parent table, the
      // only one a least-privilege role has grants on). Its own failure is on the metric; the cause is thrown.
      await this.#sweepRows(this.#sweepAllPartitions!, options).catch(() => undefined);
      throw error;
    }
    return { deleted: partitions.droppedRecords + (await this.#sweepRows(this.#sql.sweep, options)), partitions };
  }

  /**
   * Partitioned tables only: creates the partitions ahead and drops those whose records have all expired
   * (`sweep()` does this first). Each step waits for its table lock at most `partitioning.lockTimeoutMs`;
   * what could not be done is reported as skipped and left to the next run.
   */
  async maintainPartitions(): Promise<PartitionReport> {
    if (!this.#partitions) throw new IdempotencyConfigError('maintainPartitions() needs a store built with the `partitioning` option');
    const report = await timeStoreOperation('sweep', () => this.#partitions!.run());
    // Also when nothing was dropped: the counter's series then exists from the first run ("swept 0", not "no data").
    libraryInstruments().recordsSwept.add(report.droppedRecords);
    return report;
  }

  async #sweepRows(statement: string, options: SweepOptions): Promise<number> {
    const batchSize = options.batchSize ?? this.#sweepBatchSize;
    const pauseMs = options.pauseMs ?? this.#sweepPauseMs;
    const maxBatches = options.maxBatches ?? Number.POSITIVE_INFINITY;
    let total = 0;
    for (let batch = 0; batch < maxBatches; batch++) {
      const { rows } = await timeStoreOperation('sweep', () => this.#db.query<{ deleted: number }>(statement, [batchSize]));
      const deleted = Number(rows[0]?.deleted ?? 0);
      total += deleted;
      // Every completed batch counts, 0 included, so a sweeper with nothing to delete still shows that it runs.
      libraryInstruments().recordsSwept.add(deleted);
      if (deleted < batchSize) break;
      if (pauseMs > 0 && batch + 1 < maxBatches) await sleep(pauseMs);
    }
    return total;
  }

  async stats(): Promise<StoreStats[]> {
    const { rows } = await this.#db.query<{ status: StoreStats['status']; records: number; oldest_age_ms: number; lapsed_leases: number }>(
      this.#sql.stats,
    );
    return rows.map((row) => ({
      status: row.status,
      records: Number(row.records),
      oldestAgeMs: Number(row.oldest_age_ms),
      lapsedLeases: Number(row.lapsed_leases),
    }));
  }

  /** The periodic sweeper: a run still going when the timer fires again is not doubled. */
  async #sweepPeriodically(): Promise<void> {
    if (this.#sweeping) return;
    this.#sweeping = true;
    try {
      await this.sweep();
    } finally {
      this.#sweeping = false;
    }
  }

  /** Stops the sweeper and closes the listening connection. The pool or PGlite instance is the caller's. */
  async close(): Promise<void> {
    clearInterval(this.#sweepTimer);
    this.#waiters.close();
    this.#cache.clear();
    await this.#db.close();
  }

  #migrationStatements(): string[] {
    if (this.#partitions) return partitionedSchemaStatements(this.table);
    return schemaSql(this.table)
      .split(/;\s*\n/)
      .filter((statement) => statement.trim());
  }

  /** A table is never converted between plain and partitioned: say so instead of failing at the first claim. */
  async #assertTableKind(): Promise<void> {
    const layout = await tableLayout(this.#db, this.table);
    if (layout === 'missing' || (layout === 'partitioned') === (this.#partitions !== undefined)) return;
    throw new IdempotencyConfigError(
      `the table ${qualified(this.table)} exists and is ${layout === 'partitioned' ? '' : 'not '}partitioned, but the store was built ` +
        `${this.#partitions ? 'with' : 'without'} the \`partitioning\` option: a table is never converted; use a new \`table\` name to switch`,
    );
  }

  /** The transactional claim on `tx`: a new key in one statement, else the full claim (which may find it busy). */
  async #claimOn(tx: SqlQueryable, request: ClaimRequest, fence: string): Promise<ClaimResult> {
    if (this.#sql.claimNewInTransaction) {
      const { rowCount } = await tx.query(this.#sql.claimNewInTransaction, [...claimParams(request), fence]);
      if (rowCount === 1) return claimedNew(request, fence);
    }
    for (let attempt = 1; ; attempt++) {
      const { rows } = await tx.query<RecordRow & { acquired: boolean | null }>(this.#sql.claimInTransaction, this.#fullClaimParams(request, fence));
      const row = rows[0]!; // the lock CTE always yields exactly one row
      if (row.acquired === false) return { kind: 'busy' };
      if (row.status !== null) return this.#toClaimResult(row, request);
      if (attempt === CLAIM_ATTEMPTS) throw new Error('the claim found neither a free key nor a record after retries');
    }
  }

  /** The plain table's full claim takes the fence as $9; the partitioned claim function draws its own. */
  #fullClaimParams(request: ClaimRequest, fence: string): unknown[] {
    return this.#sql.claimNew ? [...claimParams(request), fence] : claimParams(request);
  }

  #toClaimResult(row: RecordRow, request: ClaimRequest): ClaimResult {
    const record = toRecord(row);
    if (row.claimed) return { kind: 'claimed', lease: { scope: record.scope, key: record.key, fence: record.fence, ttlSeconds: request.ttlSeconds }, record };
    if (record.status === 'completed') this.#cache.set(record, Number(row.expires_in_ms));
    return { kind: 'existing', record };
  }

  /**
   * The handler committed the claim early, and its writes with it: keep the record as executed, not
   * replayable, so that a retry answers 409 instead of running the operation a second time (a takeover
   * once the lease ran out). Nothing to keep when the claim was rolled back instead (FencedError).
   */
  async #keepAsExecuted(lease: Lease, status: number): Promise<void> {
    await this.#completeOn(this.#db, lease, { replayable: false, status }).catch(() => undefined);
  }

  /** Completes the owned record; with `claimMark`, only inside the claim's transaction (see openClaimTransaction). */
  async #completeOn(db: SqlQueryable, lease: Lease, completion: Completion, claimMark?: string): Promise<void> {
    const response = completion.replayable ? completion.response : null;
    const statement = claimMark === undefined ? this.#sql.complete : this.#sql.completeInClaimTransaction;
    const { rows } = await db.query(statement, [
      lease.scope,
      lease.key,
      lease.fence,
      completion.replayable,
      completion.replayable ? completion.response.status : completion.status,
      response && JSON.stringify(response.headers),
      response?.body ?? null,
      this.#waiters.channel,
      notifyId(lease.scope, lease.key),
      lease.ttlSeconds,
      ...(claimMark === undefined ? [] : [claimMark]),
    ]);
    if (rows.length !== 1) throw new FencedError(lease.fence);
  }
}

/** A record row as the statements return it (pg and PGlite differ in byte and number types). */
interface RecordRow {
  scope: string;
  key: string;
  status: 'in_progress' | 'completed';
  fingerprint: string;
  fingerprint_version: number;
  fence: string;
  attempt: number;
  steps: Record<string, unknown> | null;
  replayable: boolean | null;
  response_status: number | null;
  response_headers: Record<string, string | string[]> | null;
  response_body: Uint8Array | null;
  correlation_id: string | null;
  traceparent: string | null;
  created_at: Date;
  completed_at: Date | null;
  expires_at: Date;
  lease_remaining_ms: number;
  age_ms: number;
  expires_in_ms: number;
  claimed?: boolean;
}

function toRecord(row: RecordRow): IdempotencyRecord {
  const replayable = row.replayable === true && row.response_status !== null;
  return {
    scope: row.scope,
    key: row.key,
    status: row.status,
    fingerprint: row.fingerprint,
    fingerprintVersion: Number(row.fingerprint_version),
    fence: String(row.fence),
    attempt: Number(row.attempt),
    steps: row.steps ?? {},
    replayable: row.replayable,
    response: replayable
      ? {
          status: Number(row.response_status),
          headers: row.response_headers ?? {},
          body: row.response_body === null ? null : Buffer.from(row.response_body.buffer, row.response_body.byteOffset, row.response_body.byteLength),
        }
      : null,
    correlationId: row.correlation_id,
    traceparent: row.traceparent,
    createdAt: new Date(row.created_at),
    completedAt: row.completed_at && new Date(row.completed_at),
    expiresAt: new Date(row.expires_at),
    leaseRemainingMs: Number(row.lease_remaining_ms ?? 0),
    ageMs: Number(row.age_ms),
  };
}

function claimParams(request: ClaimRequest): unknown[] {
  return [
    request.scope,
    request.key,
    request.fingerprint,
    request.fingerprintVersion,
    request.leaseMs,
    request.ttlSeconds,
    request.correlationId ?? null,
    request.traceparent ?? null,
  ];
}

/**
 * A record this claim just inserted, as the INSERT would have returned it: a new key is the common case,
 * and reading nothing back keeps its statement as lean as a hand-written one.
 */
function claimedNew(request: ClaimRequest, fence: string): ClaimResult {
  const createdAt = new Date();
  const lease: Lease = { scope: request.scope, key: request.key, fence, ttlSeconds: request.ttlSeconds };
  return {
    kind: 'claimed',
    lease,
    record: {
      scope: request.scope,
      key: request.key,
      status: 'in_progress',
      fingerprint: request.fingerprint,
      fingerprintVersion: request.fingerprintVersion,
      fence,
      attempt: 1,
      steps: {},
      replayable: null,
      response: null,
      correlationId: request.correlationId ?? null,
      traceparent: request.traceparent ?? null,
      createdAt,
      completedAt: null,
      expiresAt: new Date(createdAt.getTime() + request.ttlSeconds * 1000),
      leaseRemainingMs: request.leaseMs,
      ageMs: 0,
    },
  };
}

/** Whether the store's database has a listening session of its own, where waiters announce themselves. */
function announcesWaiters(options: PostgresStoreOptions): boolean {
  if (options.pool) return true;
  if (options.pglite) return false;
  return typeof options.database?.queryOnListener === 'function';
}

function pickDatabase(options: PostgresStoreOptions, statements: Statements): SqlDatabase {
  const given = [options.pool, options.pglite, options.database].filter((value) => value !== undefined);
  if (given.length !== 1) throw new IdempotencyConfigError('PostgresStore needs exactly one of `pool`, `pglite` or `database`');
  if (options.pool) return fromPgPool(options.pool, { preparedStatements: (options.preparedStatements ?? true) ? Object.values(statements).filter((text) => text !== undefined) : [] });
  if (options.pglite) return fromPGlite(options.pglite);
  return options.database!;
}

/** NOTIFY channel of one table: an identifier derived from the validated table name. */
function notifyChannel(table: TableName): string {
  return `koa_idempotency_${createHash('sha256').update(`${table.schema}.${table.table}`).digest('hex').slice(0, 16)}`;
}

/** NOTIFY payload naming one record: a hash, so no key or scope travels to every listener of the database. */
function notifyId(scope: string, key: string): string {
  return createHash('sha256').update(`${scope.length}:${scope}${key}`).digest('hex').slice(0, 32);
}

/** The default `onSweepError`: a periodic sweep has no caller to throw to, so the failure goes to diag. */
function reportSweepError(error: unknown): void {
  diag.error('koa-idempotency: the periodic sweep failed', error);
}

/** `SET LOCAL lock_timeout` takes whole milliseconds and reads 0 as "no timeout": a value below 1 would round to it. */
function atLeastOneMs(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 1) throw new IdempotencyConfigError(`${name} must be at least 1 (lock_timeout = 0 would turn the timeout off); got ${value}`);
  return value;
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new IdempotencyConfigError(`${name} must be a positive number; got ${value}`);
  return value;
}

function nonNegative(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw new IdempotencyConfigError(`${name} must be zero or a positive number; got ${value}`);
  return value;
}
