import type { TransactionalDb } from '../store/transactional-db.js';
import type { IdempotencyStore, Lease } from '../store/types.js';
import { deriveKey } from './derived-key.js';

/** What the middleware exposes to handlers as `ctx.idempotency` (only on requests that own a claim). */
export interface IdempotencyContext {
  readonly key: string;
  readonly scope: string;
  /**
   * The correlation ID this request used, in its record, span attributes and W3C baggage: deterministic
   * per (scope, key), or the caller's from baggage where `telemetry.trustInboundCorrelationId` is on.
   */
  readonly correlationId: string;
  /** 1 for the first execution, more after a takeover of a crashed worker's record. */
  readonly attempt: number;
  /**
   * Transactional mode only: runs statements in the claim's transaction, so business writes made through it
   * commit together with the stored response, or not at all. A capability, not a connection: `query()` only
   * (a query builder runs on it through a small adapter, see the README), refusing BEGIN, COMMIT, ROLLBACK
   * and the like, and `commit()`, `rollback()`, `release()`, with a TransactionControlError: only the
   * middleware ends this transaction, and a nested one must use savepoints. Revoked when the claim ends: a
   * reference kept past the handler rejects every call. Undefined in lease mode.
   */
  readonly db: TransactionalDb | undefined;
  /**
   * Runs a recovery step once per request intent: a step completed before a crash is not run again
   * after the takeover; its stored result is returned instead. Results must be JSON-serialisable and
   * are returned in their JSON form. Throws FencedError if another worker took the record over.
   */
  step<T>(name: string, run: () => T | Promise<T>): Promise<T>;
  /** A key for a downstream call: the same on every retry of this request, different per label. */
  deriveKey(label: string): string;
  /** Headers for a downstream call: `Idempotency-Key` set to `deriveKey(label)`. */
  headers(label: string): Record<string, string>;
}

declare module 'koa' {
  interface DefaultContext {
    /** Set by the koa-idempotency middleware on requests that run under an idempotency claim. */
    idempotency?: IdempotencyContext;
  }
}

export interface ContextParts {
  key: string;
  scope: string;
  correlationId: string;
  attempt: number;
  db: TransactionalDb | undefined;
  lease: Lease;
  completedSteps: Record<string, unknown>;
  store: IdempotencyStore;
  headerName: string;
}

export function createIdempotencyContext(parts: ContextParts): IdempotencyContext {
  const steps = new Map(Object.entries(parts.completedSteps));
  return {
    key: parts.key,
    scope: parts.scope,
    correlationId: parts.correlationId,
    attempt: parts.attempt,
    db: parts.db,
    async step<T>(name: string, run: () => T | Promise<T>): Promise<T> {
      if (steps.has(name)) return steps.get(name) as T;
      // The result is stored as JSON; hand back the JSON form now too, so a first run and a
      // recovered run see the same value (a Date becomes a string either way).
      const result = JSON.parse(JSON.stringify((await run()) ?? null)) as T;
      await parts.store.saveStep(parts.lease, name, result, parts.db);
      steps.set(name, result);
      return result;
    },
    deriveKey: (label) => deriveKey(parts.scope, parts.key, label),
    headers: (label) => ({ [parts.headerName]: deriveKey(parts.scope, parts.key, label) }),
  };
}
