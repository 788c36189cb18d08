import { setTimeout as sleep } from 'node:timers/promises';
import { sqlstateOf } from '../error-code.js';
import { IdempotencyConfigError } from '../errors.js';
import { libraryInstruments, timeStoreOperation } from '../telemetry/metrics.js';
import { OPERATION } from '../telemetry/names.js';
import type { PartitionMaintenance, PartitionReport } from './partition-maintenance.js';
import type { SweepBatch } from './primitives/sweep.js';
import type { SqlDatabase } from './sql-database.js';
import { localLockTimeout } from './transaction-control.js';

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

export interface SweeperParts {
  db: SqlDatabase;
  /** One bounded batch of the row sweep ($1 = batch size): of the table, or of a partitioned table's catch-all partition. */
  sweepStatement: RowSweep;
  /** Partitioned tables: their maintenance, and the row sweep of every partition through the parent. */
  partitions: { maintenance: PartitionMaintenance; sweepAllStatement: RowSweep } | undefined;
  batchSize: number;
  pauseMs: number;
  /** Run a sweep every this many milliseconds; 0: never by itself. */
  intervalMs: number;
  onError: (error: unknown) => void;
}

/** A batch of the row sweep with row locks (SKIP LOCKED), and without for a table distributed by Citus. */
export interface RowSweep {
  locked: SweepBatch;
  unlocked: SweepBatch;
}

/** SQLSTATE feature_not_supported: Citus refuses FOR UPDATE on a distributed table's shards. */
const FEATURE_NOT_SUPPORTED = '0A000';
const LOCK_NOT_AVAILABLE = '55P03';
/**
 * Without SKIP LOCKED (Citus) a batch's DELETE waits for a row that a claim took afresh, holding the rows it
 * has deleted already, so a new claim of one of those waits behind a handler it has nothing to do with; a
 * short lock timeout ends the batch instead (rolled back), and the next run takes it up.
 */
const UNLOCKED_SWEEP_LOCK_TIMEOUT_MS = 100;

/**
 * Expiry: expired records deleted in bounded batches, each its own short transaction; on a partitioned table
 * whole partitions dropped first. Optionally on a timer that never keeps the process alive and never overlaps
 * a run still going.
 */
export class Sweeper {
  readonly #parts: SweeperParts;
  readonly #timer: NodeJS.Timeout | undefined;
  #sweeping = false;
  /** The database refused the row locks once: a table distributed by Citus, which it stays. */
  #locksRefused = false;

  constructor(parts: SweeperParts) {
    this.#parts = parts;
    if (parts.intervalMs > 0) {
      this.#timer = setInterval(() => void this.#sweepPeriodically().catch(parts.onError), parts.intervalMs);
      this.#timer.unref();
    }
  }

  /** See PostgresStore#sweepReport. */
  async sweep(options: SweepOptions = {}): Promise<SweepReport> {
    const { partitions, sweepStatement } = this.#parts;
    if (!partitions) return { deleted: await this.#sweepRows(sweepStatement, options), partitions: undefined };
    let report: PartitionReport;
    try {
      report = await this.maintainPartitions();
    } catch (error) {
      // No partition is dropped, and none is made ahead, until the maintenance works again: records still
      // go at their TTL, deleted row by row in whichever partition they are (through the parent table, the
      // only one a least-privilege role has grants on). Its own failure is on the metric; the cause is thrown.
      await this.#sweepRows(partitions.sweepAllStatement, options).catch(() => undefined);
      throw error;
    }
    return { deleted: report.droppedRecords + (await this.#sweepRows(sweepStatement, options)), partitions: report };
  }

  /** See PostgresStore#maintainPartitions. */
  async maintainPartitions(): Promise<PartitionReport> {
    const partitions = this.#parts.partitions;
    if (!partitions) throw new IdempotencyConfigError('maintainPartitions() needs a store built with the `partitioning` option');
    const report = await timeStoreOperation(OPERATION.SWEEP, () => partitions.maintenance.run());
    // Also when nothing was dropped: the counter's series then exists from the first run ("swept 0", not "no data").
    libraryInstruments().recordsSwept.add(report.droppedRecords);
    return report;
  }

  /** Partitioned tables: the partitions ahead (migrate() makes them so the first claims need no maintenance). */
  async createPartitionsAhead(): Promise<void> {
    await this.#parts.partitions?.maintenance.createAhead();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async #sweepRows(statement: RowSweep, options: SweepOptions): Promise<number> {
    const batchSize = options.batchSize ?? this.#parts.batchSize;
    const pauseMs = options.pauseMs ?? this.#parts.pauseMs;
    const maxBatches = options.maxBatches ?? Number.POSITIVE_INFINITY;
    let total = 0;
    for (let batch = 0; batch < maxBatches; batch++) {
      const deleted = await timeStoreOperation(OPERATION.SWEEP, () => this.#sweepBatch(statement, batchSize));
      total += deleted;
      // Every completed batch counts, 0 included, so a sweeper with nothing to delete still shows that it runs.
      libraryInstruments().recordsSwept.add(deleted);
      if (deleted < batchSize) break;
      if (pauseMs > 0 && batch + 1 < maxBatches) await sleep(pauseMs);
    }
    return total;
  }

  async #sweepBatch(statement: RowSweep, batchSize: number): Promise<number> {
    if (!this.#locksRefused) {
      try {
        return await this.#deleted(statement.locked, batchSize);
      } catch (error) {
        if (sqlstateOf(error) !== FEATURE_NOT_SUPPORTED) throw error;
        this.#locksRefused = true;
      }
    }
    return this.#deletedWithoutLocks(statement.unlocked, batchSize);
  }

  async #deletedWithoutLocks(statement: SweepBatch, batchSize: number): Promise<number> {
    const tx = await this.#parts.db.begin();
    try {
      // Only Citus refuses the row locks: SET LOCAL, which reaches its shards.
      await tx.query(localLockTimeout(UNLOCKED_SWEEP_LOCK_TIMEOUT_MS, true));
      const deleted = await statement.run(tx, batchSize);
      await tx.commit();
      return deleted;
    } catch (error) {
      await tx.rollback().catch(() => undefined);
      if (sqlstateOf(error) === LOCK_NOT_AVAILABLE) return 0;
      throw error;
    }
  }

  #deleted(statement: SweepBatch, batchSize: number): Promise<number> {
    return statement.run(this.#parts.db, batchSize);
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
}
