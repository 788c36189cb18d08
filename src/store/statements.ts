import { claimFunction, defaultPartition } from './partitioned-schema.js';
import { keyLockExpression, qualified, waiterLockExpression, type TableName } from './schema.js';
import { CLAIM_MARK } from './transaction-control.js';

/**
 * Every SQL statement of the store, built once per table. Conditions are named constants so the claim
 * reads like its specification. `r` is always the existing row.
 */

/** The record has outlived its TTL: it is as if it did not exist. */
const EXPIRED = 'r.expires_at <= now()';
/**
 * The owner's lease ran out without a completion (a crash, a hang): the same request may take over. "The same"
 * compares the fingerprints' first words: the per-part digests after them (fingerprint-parts.ts) are not part
 * of the identity, and a record written before they existed still matches its retry.
 */
const LEASE_LAPSED = `r.status = 'in_progress' AND r.lease_expires_at <= now() AND split_part(r.fingerprint, ' ', 1) = split_part(EXCLUDED.fingerprint, ' ', 1)`;
/** LEASE_LAPSED, judged before the insert: against the request's fingerprint parameter. */
const LEASE_LAPSED_FOR_REQUEST = LEASE_LAPSED.replace('EXCLUDED.fingerprint', '$3::text');
/**
 * EXPIRED and LEASE_LAPSED inside ON CONFLICT DO UPDATE, where Citus refuses any function not IMMUTABLE (0A000,
 * docs/scale-out.md): the proposed row's created_at is now() (its default), the same instant as a column.
 */
const CLAIM_TIME = 'EXCLUDED.created_at';
const EXPIRED_AT_CLAIM = EXPIRED.replace('now()', CLAIM_TIME);
const LEASE_LAPSED_AT_CLAIM = LEASE_LAPSED.replace('now()', CLAIM_TIME);

/** Columns of a record as the store reads them; the same list for the claim and for find(). */
export const RECORD_COLUMNS = `r.scope, r.key, r.status, r.fingerprint, r.fingerprint_version, r.fence::text AS fence,
  r.attempt, r.steps, r.replayable, r.response_status, r.response_headers, r.response_body,
  r.correlation_id, r.traceparent, r.created_at, r.completed_at, r.expires_at,
  greatest(0, extract(epoch FROM r.lease_expires_at - now()) * 1000)::float8 AS lease_remaining_ms,
  (extract(epoch FROM now() - r.created_at) * 1000)::float8 AS age_ms,
  (extract(epoch FROM r.expires_at - now()) * 1000)::float8 AS expires_in_ms`;

/**
 * A new record from the claim's parameters: $1 scope, $2 key, $3 fingerprint, $4 its version, $5 lease ms,
 * $6 TTL seconds, $7 correlation ID, $8 traceparent, $9 fence (see fences.ts). Explicit casts: inside
 * INSERT ... SELECT the parameters would otherwise be typed as text.
 */
const VALUES = `($1::text, $2::text, $3::text, $4::smallint, 'in_progress', $9::bigint, 1,
    now() + make_interval(secs => $5::float8 / 1000), now() + make_interval(secs => $6::float8), $7::text, $8::text)`;

const INSERT_COLUMNS = `(scope, key, fingerprint, fingerprint_version, status, fence, attempt,
    lease_expires_at, expires_at, correlation_id, traceparent)`;

const ON_CONFLICT = `ON CONFLICT (scope, key) DO UPDATE SET
    status = 'in_progress',
    fingerprint = EXCLUDED.fingerprint,
    fingerprint_version = EXCLUDED.fingerprint_version,
    fence = CASE WHEN ${EXPIRED_AT_CLAIM} THEN EXCLUDED.fence ELSE r.fence + 1 END,
    attempt = CASE WHEN ${EXPIRED_AT_CLAIM} THEN 1 ELSE r.attempt + 1 END,
    steps = CASE WHEN ${EXPIRED_AT_CLAIM} THEN '{}'::jsonb ELSE r.steps END,
    created_at = CASE WHEN ${EXPIRED_AT_CLAIM} THEN ${CLAIM_TIME} ELSE r.created_at END,
    replayable = NULL, response_status = NULL, response_headers = NULL, response_body = NULL,
    completed_at = NULL,
    lease_expires_at = EXCLUDED.lease_expires_at,
    expires_at = EXCLUDED.expires_at,
    correlation_id = EXCLUDED.correlation_id,
    traceparent = EXCLUDED.traceparent
  WHERE ${EXPIRED_AT_CLAIM} OR (${LEASE_LAPSED_AT_CLAIM})`;

export interface Statements {
  /**
   * The common case of the claim in one plain INSERT: a key nobody holds. No row inserted means the key is
   * taken, and `claim` then decides. Undefined on a partitioned table, whose claim function keeps keys unique.
   */
  claimNew: string | undefined;
  /** claimNew inside the claim's transaction, behind the key's advisory lock (see claimInTransaction). */
  claimNewInTransaction: string | undefined;
  claim: string;
  claimInTransaction: string;
  complete: string;
  /**
   * `complete` inside the claim's transaction, which it only finds while that transaction is still open
   * (its mark, $11): a handler that committed early leaves it nothing to update, at no extra round trip.
   * Completing nothing fails it with NOTHING_COMPLETED, so that a COMMIT pipelined behind it cannot commit.
   */
  completeInClaimTransaction: string;
  release: string;
  renewLease: string;
  saveStep: string;
  /** Wakes the waiters of a key whose claim was rolled back ($1 scope, $2 key, $3 channel, $4 payload). */
  notifyWaiters: string;
  /**
   * Announces a duplicate waiting for a key ($1 scope, $2 key) on the listening session: a shared lock on the
   * key, taken without waiting. Returns that session's backend pid as `session` when the lock is held, or
   * NULL when a completion of the key holds it right now (the waiter then re-reads on its own schedule).
   * With $3 the session the waiter holds it on already, nothing is taken twice (a re-announcement).
   */
  announceWaiter: string;
  /** Releases an announcement, only on the session that took it ($3): a new session never holds it. */
  withdrawWaiter: string;
  find: string;
  /** One bounded batch of the sweep ($1 = batch size), skipping the rows a claim has locked. */
  sweep: string;
  /**
   * `sweep` without row locks, for a table distributed by Citus, which refuses FOR UPDATE across shards
   * (0A000): the DELETE checks expiry again on the row it deletes, so a record claimed afresh meanwhile stays.
   */
  sweepWithoutLocks: string;
  stats: string;
}

export interface StatementOptions {
  /** The table is partitioned by time (partitioned-schema.ts): claims go through its claim function. */
  partitioned: boolean;
  /**
   * When statements notify waiters. `'whenWaited'`: only while a waiter announces itself with announceWaiter,
   * on a listening session of its own (NOTIFY takes a cluster-wide lock at commit and serialises every commit
   * that sent one). `'always'`: when waiters cannot announce themselves (PGlite's single session).
   */
  notify: 'whenWaited' | 'always';
}

export function buildStatements(name: TableName, options: StatementOptions): Statements {
  const statements = buildPlainStatements(name, options);
  if (!options.partitioned) return statements;
  return {
    ...statements,
    claimNew: undefined,
    claimNewInTransaction: undefined,
    claim: partitionedClaim(name, true),
    claimInTransaction: partitionedClaim(name, false),
    // Expired rows wait for their partition to be dropped; only the catch-all partition is swept row by row.
    sweep: sweepBatch(defaultPartition(name), true),
    sweepWithoutLocks: sweepBatch(defaultPartition(name), false),
  };
}

/**
 * The claim of a partitioned table: its function (which always returns one row) with the record's columns
 * computed as for the plain table. `wait` = false turns a held key lock into acquired = false.
 */
function partitionedClaim(name: TableName, wait: boolean): string {
  return `SELECT c.acquired, c.claimed, ${RECORD_COLUMNS}
FROM ${claimFunction(name)}($1, $2, $3, $4, $5, $6, $7, $8, ${wait}) c
CROSS JOIN LATERAL (SELECT (c.rec).*) r`;
}

/**
 * Joined to the row a write returns before it notifies: a join that never matches, which Postgres plans as nothing.
 * On Citus the catalog table in it is local, so the query cannot go whole to the worker holding the shard: the write
 * runs there as a subplan, and NOTIFY and the waiter-lock test on the coordinator, where the store LISTENs.
 */
export const WHERE_THE_LISTENERS_ARE = 'LEFT JOIN pg_catalog.pg_am coordinator_only ON false';

/**
 * NOTIFY of one key's waiters ($1 scope, $2 key; channel and payload as given), or, with `'whenWaited'`, only
 * if a waiter holds the key's waiter lock. Taking that lock instead holds it until the transaction ends, so
 * a waiter arriving in between fails to announce itself (it never waits for the lock: the listening session
 * serves every waiter of the process) and re-reads on its own schedule. One row either way. The NOTIFY
 * only hastens a wake-up; a waiter's bounded re-reads are what guarantee it (claim-settling.ts).
 */
function notifyExpression(name: TableName, notify: StatementOptions['notify'], channel: string, payload: string): string {
  if (notify === 'always') return `pg_notify(${channel}, ${payload})`;
  return `CASE WHEN pg_try_advisory_xact_lock(${waiterLockExpression(name, '$1', '$2')}) THEN NULL ELSE pg_notify(${channel}, ${payload}) END`;
}

/**
 * SQLSTATE division_by_zero, which the completion in the claim's transaction raises when it completed no
 * record (fenced, or the transaction is not the claim's any more): a statement that fails aborts the
 * transaction, so a COMMIT sent right behind it without waiting for its answer (pipelined) rolls back.
 */
export const NOTHING_COMPLETED = '22012';

/**
 * The completion's UPDATE of an owned record, `condition` added to its WHERE. Expiry counts from the
 * completion (statement_timestamp(): inside a transaction now() is its start; not clock_timestamp(), which is
 * VOLATILE, and Citus refuses volatile functions in an UPDATE of a distributed table), $10 seconds ahead.
 * `failWhenNone`: one row (completed = 1) when the record was completed, else the statement fails with
 * NOTHING_COMPLETED (1 / 0); the MATERIALIZED step is read whole by count(*), so its NOTIFY still runs.
 */
function complete(name: TableName, options: StatementOptions, condition = '', failWhenNone = false): string {
  const done = `WITH done AS (
  UPDATE ${qualified(name)} SET status = 'completed', completed_at = statement_timestamp(), lease_expires_at = NULL,
    replayable = $4, response_status = $5, response_headers = $6, response_body = $7,
    expires_at = statement_timestamp() + make_interval(secs => $10::float8)
  WHERE scope = $1 AND key = $2 AND fence = $3::bigint${condition}
  RETURNING 1
)`;
  const notify = notifyExpression(name, options.notify, '$8', '$9');
  if (!failWhenNone) return `${done}\nSELECT ${notify} FROM done ${WHERE_THE_LISTENERS_ARE}`;
  // ::text: Citus keeps the MATERIALIZED step as an intermediate result, which cannot hold pg_notify()'s void.
  return `${done}, notified AS MATERIALIZED (
  SELECT (${notify})::text AS notified FROM done ${WHERE_THE_LISTENERS_ARE}
)
SELECT 1 / count(*)::int AS completed FROM notified`;
}

/**
 * One bounded batch of the sweep. SKIP LOCKED keeps the sweeper out of the way of claims, and a live lease
 * is never swept even past the TTL. The DELETE repeats the condition: without the row locks (`locking` false)
 * it is what keeps a record claimed afresh since the batch was chosen.
 */
export function sweepBatch(name: TableName, locking: boolean): string {
  const table = qualified(name);
  const doomed = (row: string) => `${row}.expires_at <= now() AND NOT (${row}.status = 'in_progress' AND ${row}.lease_expires_at > now())`;
  return `WITH doomed AS (
  SELECT scope, key FROM ${table} t
  WHERE ${doomed('t')}
  LIMIT $1${locking ? '\n  FOR UPDATE SKIP LOCKED' : ''}
), gone AS (
  DELETE FROM ${table} r USING doomed d WHERE r.scope = d.scope AND r.key = d.key AND ${doomed('r')} RETURNING 1
)
SELECT count(*)::int AS deleted FROM gone`;
}

function buildPlainStatements(name: TableName, options: StatementOptions): Statements {
  const table = qualified(name);
  const owned = `scope = $1 AND key = $2 AND fence = $3::bigint AND status = 'in_progress'`;
  /** The live record that holds the key for someone else: completed, or in progress under a live lease. */
  const blocking = `blocking AS (
  SELECT ${RECORD_COLUMNS} FROM ${table} r
  WHERE r.scope = $1 AND r.key = $2 AND NOT (${EXPIRED} OR (${LEASE_LAPSED_FOR_REQUEST}))
),`;
  // RETURNING tells whether a row went in: Citus reports INSERT 0 1 for an INSERT ... SELECT that inserted nothing.
  const insertNew = (source: string) => `INSERT INTO ${table} AS r ${INSERT_COLUMNS}
  ${source}
  ON CONFLICT (scope, key) DO NOTHING
  RETURNING 1`;
  return {
    claimNew: insertNew(`VALUES ${VALUES}`),

    /**
     * claimNew behind the key's advisory lock, taken without waiting (see claimInTransaction). No row
     * inserted means the lock or the key is taken; claimInTransaction then tells which.
     */
    claimNewInTransaction: insertNew(`SELECT v.* FROM (VALUES ${VALUES}) AS v WHERE pg_try_advisory_xact_lock(${keyLockExpression(name, '$1', '$2')})`),

    /**
     * The claim: ONE statement that either inserts (or takes over) the record and returns it with
     * claimed = true, or returns the record that stands in the way with claimed = false.
     * The record in the way is read first, so a duplicate (a replay, a 409, a 422) only reads: it never
     * attempts the insert, whose ON CONFLICT would lock the row and make the statement write.
     * Under READ COMMITTED that read uses the statement's snapshot, which may predate a conflicting row
     * committed a moment later: the insert then finds the conflict, the statement returns no row, and
     * the store runs it again with a fresh snapshot.
     */
    claim: `WITH ${blocking} claimed AS (
  INSERT INTO ${table} AS r ${INSERT_COLUMNS}
  SELECT v.* FROM (VALUES ${VALUES}) AS v WHERE NOT EXISTS (SELECT 1 FROM blocking)
  ${ON_CONFLICT}
  RETURNING ${RECORD_COLUMNS}
)
SELECT *, true AS claimed FROM claimed
UNION ALL
SELECT *, false AS claimed FROM blocking`,

    /**
     * The transactional claim. A live record in the way is read first and answers without any lock
     * (acquired = true, claimed = false), as in the partitioned claim function: a duplicate only reads.
     * Otherwise a transaction-scoped advisory lock on the key is taken, without waiting, before the insert:
     * an uncommitted claim of the same key in another transaction would make INSERT ... ON CONFLICT wait
     * for that whole transaction, pinning a pool client. When another transaction holds the lock, the
     * statement returns one row with acquired = false and no record, and touches nothing.
     * Readers never take the lock: one holding it for a moment would make a waiter's re-read "busy" after
     * the completion's NOTIFY had gone by, and that waiter would sleep out its whole waitMs.
     */
    claimInTransaction: `WITH ${blocking} lock AS MATERIALIZED (
  SELECT CASE WHEN EXISTS (SELECT 1 FROM blocking) THEN true ELSE pg_try_advisory_xact_lock(${keyLockExpression(name, '$1', '$2')}) END AS acquired
), claimed AS (
  INSERT INTO ${table} AS r ${INSERT_COLUMNS}
  SELECT v.* FROM (VALUES ${VALUES}) AS v, lock WHERE lock.acquired AND NOT EXISTS (SELECT 1 FROM blocking)
  ${ON_CONFLICT}
  RETURNING ${RECORD_COLUMNS}
)
SELECT lock.acquired, record.* FROM lock LEFT JOIN (
  SELECT *, true AS claimed FROM claimed
  UNION ALL
  SELECT *, false AS claimed FROM blocking
) record ON lock.acquired`,

    /**
     * Completes the record if, and only if, this worker still owns it (its fence), then wakes waiters.
     * A record this same fence already completed matches too: a completion whose answer was lost can
     * be retried, and rewrites the very same response.
     */
    complete: complete(name, options),
    completeInClaimTransaction: complete(name, options, ` AND current_setting('${CLAIM_MARK}', true) = $11`, true),

    /** Deletes the owned record so that the client's retry runs afresh (a thrown error or a 5xx). */
    release: `WITH gone AS (
  DELETE FROM ${table} WHERE ${owned} RETURNING 1
)
SELECT ${notifyExpression(name, options.notify, '$4', '$5')} FROM gone ${WHERE_THE_LISTENERS_ARE}`,

    // The key's two parameters typed here: the 'always' expression does not read them.
    notifyWaiters: `SELECT ${notifyExpression(name, options.notify, '$3', '$4')} FROM (VALUES ($1::text, $2::text)) AS waited (scope, key)`,
    // CASE evaluates its branches in order: the lock is only tried when this session does not hold it yet.
    announceWaiter: `SELECT CASE WHEN pg_backend_pid() = $3::int THEN pg_backend_pid()
  WHEN pg_try_advisory_lock_shared(${waiterLockExpression(name, '$1', '$2')}) THEN pg_backend_pid() END AS session`,
    withdrawWaiter: `SELECT CASE WHEN pg_backend_pid() = $3::int THEN pg_advisory_unlock_shared(${waiterLockExpression(name, '$1', '$2')}) END`,

    renewLease: `UPDATE ${table} SET
    lease_expires_at = now() + make_interval(secs => $4::float8 / 1000),
    expires_at = greatest(expires_at, now() + make_interval(secs => $4::float8 / 1000))
  WHERE ${owned}
  RETURNING 1`,

    saveStep: `UPDATE ${table} SET steps = steps || jsonb_build_object($4::text, $5::jsonb)
  WHERE ${owned}
  RETURNING 1`,

    find: `SELECT ${RECORD_COLUMNS} FROM ${table} r WHERE r.scope = $1 AND r.key = $2`,

    sweep: sweepBatch(name, true),
    sweepWithoutLocks: sweepBatch(name, false),

    stats: `SELECT status, count(*)::int AS records,
  (extract(epoch FROM now() - min(created_at)) * 1000)::float8 AS oldest_age_ms,
  count(*) FILTER (WHERE status = 'in_progress' AND lease_expires_at <= now())::int AS lapsed_leases
FROM ${table} GROUP BY status ORDER BY status`,
  };
}
