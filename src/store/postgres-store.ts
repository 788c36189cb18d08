import { FencedError } from '../errors.js';
import { timeStoreOperation } from '../telemetry/metrics.js';
import { OPERATION } from '../telemetry/names.js';
import { newFence } from './fences.js';
import { ForgetNotices } from './forget-notices.js';
import type { ForgetResult } from './operator-records.js';
import { assertCitus, distributeTable, resolveDistribution, type MigrateOptions } from './distribution.js';
import { assertTableKind, migrationStatements } from './migration.js';
import { PartitionMaintenance, type PartitionReport } from './partition-maintenance.js';
import { announcesWaiters, openDatabase, resolveStoreOptions, type PostgresStoreOptions } from './postgres-store-options.js';
import { ReplayCache } from './replay-cache.js';
import type { TableName } from './schema.js';
import type { ClaimRow } from './primitives/claim.js';
import { claimedNew } from './primitives/claim-new.js';
import { toRecord } from './primitives/record-row.js';
import { operatorPrimitives, preparedStatements, storePrimitives, type OperatorPrimitives, type StorePrimitives } from './primitives/store-primitives.js';
import { sweepBatch } from './primitives/sweep.js';
import type { SqlDatabase, SqlQueryable } from './sql-database.js';
import { Sweeper, type SweepOptions, type SweepReport } from './sweeper.js';
import { claimedTransaction } from './transactional-claim.js';
import { CitusProbe } from './citus-probe.js';
import { wakingWaitersAtTheEnd } from './claim-wake-ups.js';
import { openClaimTransaction } from './transaction-control.js';
import type { ChangeWatch, ClaimRequest, ClaimResult, Completion, IdempotencyRecord, IdempotencyStore, Lease, StoreStats, TransactionalClaim } from './types.js';
import { Waiters } from './waiters.js';

export type { PostgresStoreOptions } from './postgres-store-options.js';
export type { DistributionOptions, MigrateOptions } from './distribution.js';
export type { SweepOptions, SweepReport } from './sweeper.js';
export type { ForgetResult } from './operator-records.js';

/**
 * The Postgres store: records in one table, fenced leases, LISTEN/NOTIFY for waiting duplicates. A new key
 * is claimed by one plain INSERT; the full claim statement (takeover of an expired or lapsed record, or the
 * record in the way) runs only when the key is taken. Works over node-postgres and over PGlite with the same SQL.
 * A façade: it picks the connection (the pool, the claim's transaction, the listening session) and runs the
 * primitives of primitives/, one statement each, with its text, values and name in one file.
 */
export class PostgresStore implements IdempotencyStore {
  readonly table: TableName;
  readonly #db: SqlDatabase;
  readonly #sql: StorePrimitives;
  readonly #operator: OperatorPrimitives;
  readonly #cache: ReplayCache;
  readonly #waiters: Waiters;
  readonly #lockTimeoutMs: number;
  readonly #partitioned: boolean;
  readonly #sweeper: Sweeper;
  readonly #forgets: ForgetNotices;
  readonly #citus: CitusProbe;

  constructor(options: PostgresStoreOptions) {
    const resolved = resolveStoreOptions(options);
    this.table = resolved.table;
    this.#partitioned = resolved.partitioning !== undefined;
    const primitiveOptions = { table: this.table, partitioned: this.#partitioned, notify: announcesWaiters(options) ? 'whenWaited' : 'always' } as const;
    this.#sql = storePrimitives(primitiveOptions);
    this.#operator = operatorPrimitives(primitiveOptions);
    this.#db = openDatabase(options, preparedStatements(this.#sql));
    this.#cache = new ReplayCache(resolved.replayCacheEntries, resolved.replayCacheBytes);
    this.#lockTimeoutMs = resolved.lockTimeoutMs;
    this.#citus = new CitusProbe(this.#db);
    const queryOnListener = this.#db.queryOnListener?.bind(this.#db);
    const listener: SqlQueryable | undefined = queryOnListener && { query: queryOnListener };
    this.#waiters = new Waiters({
      strategy: resolved.waitStrategy,
      pollIntervalMs: resolved.pollIntervalMs,
      table: this.table,
      listen: (channel, onNotify, onReconnect) => this.#db.listen(channel, onNotify, onReconnect),
      announcer: listener && {
        announce: (scope, key, session) => this.#sql.announceWaiter.run(listener, scope, key, session),
        withdraw: (scope, key, session) => this.#sql.withdrawWaiter.run(listener, scope, key, session),
      },
      maxAnnouncedWaiters: resolved.maxAnnouncedWaiters,
    });
    // Only a store that caches replays has anything to forget, and only one that can LISTEN can hear of it.
    const listens = resolved.waitStrategy === 'notify' && resolved.replayCacheEntries > 0;
    const forgetting = { forget: this.#operator.forget, find: this.#sql.find };
    this.#forgets = new ForgetNotices({ db: this.#db, sql: forgetting, channel: this.#waiters.channel, cache: this.#cache, listens });
    this.#sweeper = new Sweeper({
      db: this.#db,
      sweepStatement: { locked: this.#sql.sweep, unlocked: this.#sql.sweepWithoutLocks },
      partitions: resolved.partitioning && {
        maintenance: new PartitionMaintenance(this.#db, this.table, resolved.partitioning, this.#citus),
        sweepAllStatement: { locked: sweepBatch(this.table, true), unlocked: sweepBatch(this.table, false) },
      },
      batchSize: resolved.sweepBatchSize,
      pauseMs: resolved.sweepPauseMs,
      intervalMs: resolved.sweepIntervalMs,
      onError: resolved.onSweepError,
    });
  }

  /**
   * Creates the schema, sequence, table and index if missing (partitioned: also the catch-all partition, the claim
   * function and the partitions ahead), then with `distribute` distributes it with Citus (distribution.ts). Idempotent.
   */
  async migrate(options: MigrateOptions = {}): Promise<void> {
    const distribution = resolveDistribution(options.distribute);
    if (distribution) await assertCitus(this.#db, this.table);
    await assertTableKind(this.#db, this.table, this.#partitioned);
    const statements = migrationStatements(this.table, this.#partitioned);
    for (const statement of statements) await this.#db.query(statement);
    await this.#sweeper.createPartitionsAhead(); // then a partitioned table's claim function (the last statement) again
    if (distribution) await distributeTable(this.#db, this.table, distribution, this.#partitioned ? statements.at(-1) : undefined);
  }

  /**
   * Lease mode: a new key is one plain INSERT; a key already taken (rare outside replays, which the replay
   * cache mostly answers) runs the full claim, which takes over an expired or lapsed record, or returns it.
   */
  async claim(request: ClaimRequest): Promise<ClaimResult> {
    this.#forgets.listen();
    const cached = this.#cache.get(request.scope, request.key);
    if (cached) return { kind: 'existing', record: cached };
    return timeStoreOperation(OPERATION.CLAIM, () => this.#claimOn(this.#db, request, newFence(), 'lease'));
  }

  async claimInTransaction(request: ClaimRequest): Promise<TransactionalClaim> {
    this.#forgets.listen();
    const cached = this.#cache.get(request.scope, request.key);
    if (cached) return { kind: 'existing', record: cached };
    const citus = await this.#citus.isCitus();
    const fence = newFence();
    const tx = await timeStoreOperation(OPERATION.BEGIN, () => this.#db.begin());
    try {
      // The fence marks the transaction: random, and this claim's own.
      const mark = fence;
      const open = () => openClaimTransaction(tx, this.#lockTimeoutMs, mark, citus);
      const claim = () => timeStoreOperation(OPERATION.CLAIM, () => this.#claimOn(tx, request, fence, 'transactional'));
      let result: ClaimResult;
      if (tx.sendTogether) {
        // BEGIN, the mark and the claim go out in one write; should BEGIN or the mark fail, the claim fails
        // with them (the transaction is aborted), and the handler never runs.
        const [opened, claiming] = tx.sendTogether(() => [open(), claim()] as const);
        [result] = await Promise.all([claiming, opened]);
      } else {
        await open();
        result = await claim();
      }
      if (result.kind !== 'claimed') {
        await tx.rollback();
        return result;
      }
      const claimed = claimedTransaction({
        tx,
        mark,
        lease: result.lease,
        record: result.record,
        complete: this.#sql.complete,
        completeInClaimTransaction: this.#sql.completeInClaimTransaction,
        db: this.#db,
      });
      return wakingWaitersAtTheEnd(claimed, () => this.#sql.notifyWaiters.run(this.#db, request.scope, request.key));
    } catch (error) {
      await tx.rollback().catch(() => undefined);
      throw error;
    }
  }

  async complete(lease: Lease, completion: Completion): Promise<void> {
    await timeStoreOperation(OPERATION.COMPLETE, () => this.#sql.complete.run(this.#db, lease, completion));
  }

  async release(lease: Lease): Promise<void> {
    await timeStoreOperation(OPERATION.RELEASE, () => this.#sql.release.run(this.#db, lease));
  }

  renewLease(lease: Lease, leaseMs: number): Promise<boolean> {
    return timeStoreOperation(OPERATION.RENEW, () => this.#sql.renewLease.run(this.#db, lease, leaseMs));
  }

  async saveStep(lease: Lease, name: string, result: unknown, db: SqlQueryable = this.#db): Promise<void> {
    const saved = await timeStoreOperation(OPERATION.STEP, () => this.#sql.saveStep.run(db, lease, name, result));
    if (!saved) throw new FencedError(lease.fence);
  }

  /**
   * With the 'notify' strategy on a database with a listening session of its own, the waiter also announces
   * itself there (a shared lock on the key) before the caller re-reads the record: completions notify only
   * while someone waits.
   */
  watch(scope: string, key: string): Promise<ChangeWatch> {
    return this.#waiters.watch(scope, key);
  }

  find(scope: string, key: string): Promise<IdempotencyRecord | undefined> {
    return timeStoreOperation(OPERATION.FIND, () => this.#sql.find.run(this.#db, scope, key));
  }

  /**
   * Removes a completed record (an operator's support case: the customer must resubmit), or with `force` an
   * in-progress one whose lease has lapsed; never a live lease. See operator-records.ts.
   */
  forget(scope: string, key: string, options: { force?: boolean } = {}): Promise<ForgetResult> {
    return this.#forgets.forget(scope, key, options.force ?? false);
  }

  /** The records a problem's occurrence ID points to (`inspect --instance`): a full scan, for operators. */
  findByCorrelationTag(tag: string): Promise<IdempotencyRecord[]> {
    return this.#operator.findByCorrelationTag.run(this.#db, tag);
  }

  /**
   * Deletes expired records in bounded batches; returns how many were deleted. A partitioned table first
   * creates the partitions ahead and drops those whose records have all expired, then sweeps its catch-all
   * partition row by row. When the partition maintenance fails (42501 for a role that does not own the
   * table), every partition is swept row by row instead, and the maintenance's error is thrown after that.
   */
  async sweep(options: SweepOptions = {}): Promise<number> {
    return (await this.#sweeper.sweep(options)).deleted;
  }

  /** sweep(), telling also what the partition maintenance did (for a partitioned table). */
  sweepReport(options: SweepOptions = {}): Promise<SweepReport> {
    return this.#sweeper.sweep(options);
  }

  /**
   * Partitioned tables only: creates the partitions ahead and drops those whose records have all expired
   * (`sweep()` does this first). Each step waits for its table lock at most `partitioning.lockTimeoutMs`;
   * what could not be done is reported as skipped and left to the next run.
   */
  maintainPartitions(): Promise<PartitionReport> {
    return this.#sweeper.maintainPartitions();
  }

  stats(): Promise<StoreStats[]> {
    return this.#sql.stats.run(this.#db);
  }

  /** Stops the sweeper and closes the listening connection. The pool or PGlite instance is the caller's. */
  async close(): Promise<void> {
    this.#sweeper.stop();
    this.#forgets.close();
    this.#waiters.close();
    this.#cache.clear();
    await this.#db.close();
  }

  /**
   * The claim on `db` (the pool, or the claim's transaction): a new key in one statement, else the full claim
   * (which runs again with a fresh snapshot until it finds the key free or the record in the way). In
   * transactional mode the full claim may find the key's lock taken: busy.
   */
  async #claimOn(db: SqlQueryable, request: ClaimRequest, fence: string, mode: 'lease' | 'transactional'): Promise<ClaimResult> {
    const [claimNew, claim] = mode === 'lease' ? [this.#sql.claimNew, this.#sql.claim] : [this.#sql.claimNewInTransaction, this.#sql.claimInTransaction];
    if (claimNew) {
      const { rows } = await db.query(claimNew.text, claimNew.values(request, fence));
      if (rows.length === 1) return claimedNew(request, fence);
    }
    const row = await claim.run(db, request, fence);
    if (row.acquired === false) return { kind: 'busy' };
    return this.#toClaimResult(row, request);
  }

  #toClaimResult(row: ClaimRow, request: ClaimRequest): ClaimResult {
    const record = toRecord(row);
    if (!row.claimed) {
      if (record.status === 'completed') this.#cache.set(record, Number(row.expires_in_ms));
      return { kind: 'existing', record };
    }
    return { kind: 'claimed', lease: { scope: record.scope, key: record.key, fence: record.fence, ttlSeconds: request.ttlSeconds }, record };
  }
}
