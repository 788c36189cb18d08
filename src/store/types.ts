import type { SqlQueryable } from './sql-database.js';
import type { TransactionalDb } from './transactional-db.js';

export const RECORD_STATUS = { IN_PROGRESS: 'in_progress', COMPLETED: 'completed' } as const;
export type RecordStatus = (typeof RECORD_STATUS)[keyof typeof RECORD_STATUS];

/**
 * A response as the store keeps it for replay: captured (and replayed) by the middleware's response.ts,
 * stored and read back whole by the store.
 */
export interface StoredResponse {
  status: number;
  /** Replay-safe headers only (lower-case names). */
  headers: Record<string, string | string[]>;
  /** The body bytes, or null when the handler set no body. */
  body: Buffer | null;
}

/** One idempotency record, as read from the store. */
export interface IdempotencyRecord {
  scope: string;
  key: string;
  status: RecordStatus;
  fingerprint: string;
  fingerprintVersion: number;
  /** The fencing token of the current owner (a decimal bigint). */
  fence: string;
  /** 1 for the first execution; each takeover after a lapsed lease adds one. */
  attempt: number;
  /** Results of completed recovery steps, by step name. */
  steps: Record<string, unknown>;
  /** For a completed record: whether `response` holds a faithful copy of the answer. */
  replayable: boolean | null;
  response: StoredResponse | null;
  correlationId: string | null;
  /** W3C traceparent of the request that executed (or is executing) the operation. */
  traceparent: string | null;
  createdAt: Date;
  completedAt: Date | null;
  expiresAt: Date;
  /** Milliseconds left on the owner's lease; 0 when completed or lapsed. */
  leaseRemainingMs: number;
  ageMs: number;
}

export interface ClaimRequest {
  scope: string;
  key: string;
  fingerprint: string;
  fingerprintVersion: number;
  leaseMs: number;
  ttlSeconds: number;
  correlationId?: string | undefined;
  traceparent?: string | undefined;
}

/** Proof of ownership of an in-progress record; every write to the record must present it. */
export interface Lease {
  scope: string;
  key: string;
  fence: string;
  /** How long the record is kept once completed: its expiry counts from the completion. */
  ttlSeconds: number;
}

export type ClaimResult =
  /** This request owns the record now and must run the operation (a first run or a takeover). */
  | { kind: 'claimed'; lease: Lease; record: IdempotencyRecord }
  /** Another request got there first; the record tells how far it got. */
  | { kind: 'existing'; record: IdempotencyRecord }
  /** Transactional mode: another transaction holds the key; its record is not visible yet. */
  | { kind: 'busy' };

/** What a finished operation leaves in its record. */
export type Completion = { replayable: true; response: StoredResponse } | { replayable: false; status: number };

/** A transactional claim: the record and the handler's writes share one transaction. */
export type TransactionalClaim =
  | {
      kind: 'claimed';
      lease: Lease;
      record: IdempotencyRecord;
      /**
       * The handler's business writes run through this, in the claim's transaction: `query()` only, refusing
       * transaction control, and revoked once `commit()` or `rollback()` begins.
       */
      db: TransactionalDb;
      /** Stores the completion and commits everything in one transaction. */
      commit(completion: Completion): Promise<void>;
      /** Rolls back the claim together with every write of the handler. */
      rollback(): Promise<void>;
    }
  | { kind: 'existing'; record: IdempotencyRecord }
  | { kind: 'busy' };

/** Waits for the record of one key to change (completed or released). */
export interface ChangeWatch {
  /** Resolves when the record may have changed, or after `timeoutMs`, whichever is first. */
  next(timeoutMs: number): Promise<'changed' | 'timeout'>;
  close(): void;
}

export interface StoreStats {
  status: RecordStatus;
  records: number;
  oldestAgeMs: number;
  lapsedLeases: number;
}

/**
 * The contract between the middleware and a store: exactly the primitives the middleware calls. The store
 * owns atomicity; the middleware owns the request lifecycle and never writes SQL. `PostgresStore` is the
 * implementation shipped; another one must pass the conformance suite (`koa-idempotency/conformance`).
 * Operations tools (find, stats, sweep, migrate) are PostgresStore's own, not part of the contract.
 */
export interface IdempotencyStore {
  /**
   * `false` for a store whose claimInTransaction() always rejects (MemoryStore): idempotency() then refuses
   * `transactional: true` at construction rather than answer every request 503.
   * @default true
   */
  readonly transactions?: boolean;
  claim(request: ClaimRequest): Promise<ClaimResult>;
  claimInTransaction(request: ClaimRequest): Promise<TransactionalClaim>;
  /** Throws FencedError when the lease was lost: nothing is written. */
  complete(lease: Lease, completion: Completion): Promise<void>;
  /** Deletes the owned record so a retry starts afresh. A lost lease is not an error here. */
  release(lease: Lease): Promise<void>;
  /** Returns false when the lease was lost to a takeover. */
  renewLease(lease: Lease, leaseMs: number): Promise<boolean>;
  /** Throws FencedError when the lease was lost. */
  saveStep(lease: Lease, name: string, result: unknown, db?: SqlQueryable): Promise<void>;
  /** Registers interest in one record; the caller re-reads (claims) after it resolves, then waits. */
  watch(scope: string, key: string): Promise<ChangeWatch>;
}
