import { diag } from '@opentelemetry/api';
import { FencedError } from '../errors.js';
import type { TransactionalDb } from '../store/transactional-db.js';
import { CompletionRolledBackError } from '../store/completion-rolled-back.js';
import type { ClaimRequest, ClaimResult, Completion, IdempotencyRecord, IdempotencyStore, Lease, TransactionalClaim } from '../store/types.js';
import { MODE, OPERATION, type Mode, type Operation } from '../telemetry/names.js';
import { completeLeased, keepLeaseAlive } from './lease.js';
import type { RequestTelemetry } from './request-telemetry.js';

/**
 * The claim a request holds on its key, the same in both modes, so the middleware runs one lifecycle: run
 * the handler, then `complete()` or `abandon()`. Lease mode: the claim committed on its own, the lease is
 * renewed while the handler runs and until its completion lands, and the completion is fenced.
 * Transactional mode: the claim, the handler's writes (through `db`) and the stored response share one
 * transaction.
 */
export interface HeldClaim {
  readonly record: IdempotencyRecord;
  readonly lease: Lease;
  /** The claim's transaction for the handler's writes (transactional mode); undefined in lease mode. */
  readonly db: TransactionalDb | undefined;
  /**
   * Stores the handler's response. A failure is reported to the request's telemetry and returned for the
   * answer (answerCompletionFailed); a lease-mode failure other than a lost lease returns nothing: the
   * handler's response goes out, and the record is left to its lease.
   */
  complete(completion: Completion): Promise<CompletionFailure | undefined>;
  /** Gives the key back (the lease released, or the transaction rolled back): retryable at once. Never rejects. */
  abandon(): Promise<void>;
}

export type CompletionFailure = 'lostLease' | { error: unknown };

/** The store's answer to a claim in either mode: the caller holds the key (`claimed`), or another does. */
export type StoreClaim = ClaimResult | TransactionalClaim;

/** A mode's claim: the store call that claims a key, and the hold on the key once the store says `claimed`. */
export interface ClaimMode<C extends StoreClaim = StoreClaim> {
  readonly name: Mode;
  claim(store: IdempotencyStore, request: ClaimRequest): Promise<C>;
  hold(claimed: Extract<C, { kind: 'claimed' }>, store: IdempotencyStore, leaseMs: number, telemetry: RequestTelemetry): HeldClaim;
}

export const LEASE_MODE: ClaimMode<ClaimResult> = {
  name: MODE.LEASE,
  claim: (store, request) => store.claim(request),
  hold: (claimed, store, leaseMs, telemetry) => new LeasedClaim(claimed, store, leaseMs, telemetry),
};

export const TRANSACTIONAL_MODE: ClaimMode<TransactionalClaim> = {
  name: MODE.TRANSACTIONAL,
  claim: (store, request) => store.claimInTransaction(request),
  hold: (claimed, _store, _leaseMs, telemetry) => new TransactionClaim(claimed, telemetry),
};

class LeasedClaim implements HeldClaim {
  readonly record: IdempotencyRecord;
  readonly lease: Lease;
  readonly db = undefined;
  readonly #store: IdempotencyStore;
  readonly #telemetry: RequestTelemetry;
  readonly #renewal: { stop(): void };

  constructor(claimed: Extract<ClaimResult, { kind: 'claimed' }>, store: IdempotencyStore, leaseMs: number, telemetry: RequestTelemetry) {
    this.record = claimed.record;
    this.lease = claimed.lease;
    this.#store = store;
    this.#telemetry = telemetry;
    this.#renewal = keepLeaseAlive(store, claimed.lease, leaseMs);
  }

  async complete(completion: Completion): Promise<CompletionFailure | undefined> {
    try {
      await completeLeased(this.#store, this.lease, completion);
      return undefined;
    } catch (error) {
      reportStoreError(this.#telemetry, OPERATION.COMPLETE, error);
      return error instanceof FencedError ? 'lostLease' : undefined;
    } finally {
      // Renewed until the completion lands or gives up: a lease lapsing between its retries let a duplicate
      // take the key over and run the operation again.
      this.#renewal.stop();
    }
  }

  abandon(): Promise<void> {
    this.#renewal.stop();
    return this.#store.release(this.lease).catch((error: unknown) => reportStoreError(this.#telemetry, OPERATION.RELEASE, error));
  }
}

class TransactionClaim implements HeldClaim {
  readonly #claimed: Extract<TransactionalClaim, { kind: 'claimed' }>;
  readonly #telemetry: RequestTelemetry;

  constructor(claimed: Extract<TransactionalClaim, { kind: 'claimed' }>, telemetry: RequestTelemetry) {
    this.#claimed = claimed;
    this.#telemetry = telemetry;
  }

  get record(): IdempotencyRecord {
    return this.#claimed.record;
  }

  get lease(): Lease {
    return this.#claimed.lease;
  }

  get db(): TransactionalDb {
    return this.#claimed.db;
  }

  async complete(completion: Completion): Promise<CompletionFailure | undefined> {
    try {
      await this.#claimed.commit(completion);
      return undefined;
    } catch (error) {
      this.#telemetry.storeFailure(error instanceof CompletionRolledBackError ? error.cause : error, OPERATION.COMMIT);
      return { error };
    }
  }

  abandon(): Promise<void> {
    return this.#claimed.rollback().catch((error: unknown) => reportStoreError(this.#telemetry, OPERATION.ROLLBACK, error));
  }
}

/**
 * A store failure after the handler ran cannot be answered with an error: the operation happened.
 * The handler's response goes out; the record is left to its lease (lease mode) and the failure to
 * diag and the request's span.
 */
function reportStoreError(telemetry: RequestTelemetry, operation: Operation, error: unknown): void {
  telemetry.storeFailure(error, operation);
  if (error instanceof FencedError) diag.warn(`koa-idempotency: ${operation} refused: ${error.message}`);
  else diag.error(`koa-idempotency: ${operation} failed`, error);
}
