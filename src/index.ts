/**
 * koa-idempotency: the middleware and what its users touch (options, the handler's context, errors, problem
 * types, the store contract). The other audiences have entries of their own (package.json `exports`):
 * `koa-idempotency/postgres` (the Postgres store, its adapters and schema SQL), `/otel` (tracing, sampling,
 * telemetry names), `/client` (idempotentFetch), `/conformance` (the store test suite). This entry loads
 * neither `pg` nor an OpenTelemetry SDK. Everything not exported from an entry is internal.
 */
export { idempotency } from './middleware/middleware.js';
export { storeSuccessAndClientErrors, DEFAULT_LEASE_MS, DEFAULT_MAX_BODY_BYTES, DEFAULT_TTL_SECONDS, DEFAULT_WAIT_MS } from './middleware/options.js';
export { DEFAULT_HEADER_NAME, DEFAULT_MAX_KEY_LENGTH, PROBLEMS, problemType, REPLAYED_HEADER } from './protocol.js';
export type { ProblemName } from './protocol.js';
export type { IdempotencyOptions, TelemetryOptions } from './middleware/options.js';
export type { IdempotencyContext } from './middleware/context.js';
export { IdempotencyError, FencedError, IdempotencyConfigError } from './errors.js';
export { CompletionRolledBackError } from './store/completion-rolled-back.js';
export { TransactionControlError } from './store/transaction-control.js';
export { openApiDocument, OPENAPI_DOCUMENT_PATH } from './middleware/openapi.js';
export { NEVER_REPLAYED_HEADERS } from './middleware/response.js';
export { fingerprint, FINGERPRINT_VERSION } from './middleware/fingerprint.js';
export type { FingerprintInput } from './middleware/fingerprint.js';

// The store contract: what the `store` option takes, and what a store of another kind implements.
export { RECORD_STATUS } from './store/types.js';
export type {
  IdempotencyStore,
  IdempotencyRecord,
  ClaimRequest,
  ClaimResult,
  TransactionalClaim,
  Completion,
  Lease,
  ChangeWatch,
  RecordStatus,
  StoreStats,
  StoredResponse,
} from './store/types.js';
// The contract in one process's memory: for the unit tests of an API (lease mode), never for production.
export { MemoryStore } from './store/memory-store.js';
// The types of `ctx.idempotency.db`, the handler's view of the claim's transaction.
export type { SqlQueryable, SqlResult } from './store/sql-database.js';
export type { TransactionalDb } from './store/transactional-db.js';
