/**
 * koa-idempotency: the public API. Everything not exported here is internal.
 */
export { idempotency } from './middleware.js';
export {
  storeSuccessAndClientErrors,
  DEFAULT_HEADER_NAME,
  DEFAULT_LEASE_MS,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_MAX_KEY_LENGTH,
  DEFAULT_TTL_SECONDS,
  DEFAULT_WAIT_MS,
} from './options.js';
export type { IdempotencyOptions, TelemetryOptions } from './options.js';
export type { IdempotencyContext } from './context.js';
export { IdempotencyError, StoreUnavailableError, FencedError, IdempotencyConfigError } from './errors.js';
export { CompletionRolledBackError } from './store/completion-rolled-back.js';
export { TransactionControlError } from './store/transaction-control.js';
export { PROBLEMS, problemType } from './problems.js';
export { openApiDocument, OPENAPI_DOCUMENT_PATH } from './openapi.js';
export type { ProblemName } from './problems.js';
export { NEVER_REPLAYED_HEADERS, REPLAYED_HEADER } from './response.js';
export type { StoredResponse } from './response.js';
export { fingerprint, FINGERPRINT_VERSION } from './fingerprint.js';
export type { FingerprintInput } from './fingerprint.js';

export { PostgresStore } from './store/postgres-store.js';
export type { PostgresStoreOptions, SweepOptions, SweepReport, ForgetResult, MigrateOptions, DistributionOptions } from './store/postgres-store.js';
export { DEFAULT_PARTITION_INTERVAL_SECONDS, DEFAULT_PREMADE_PARTITIONS, DEFAULT_PARTITION_LOCK_TIMEOUT_MS } from './store/partition-maintenance.js';
export type { PartitioningOptions, PartitionReport } from './store/partition-maintenance.js';
export { fromPgPool } from './store/pg-database.js';
export { fromPGlite } from './store/pglite-database.js';
export { schemaSql, DEFAULT_SCHEMA, DEFAULT_TABLE } from './store/schema.js';
export { migrationSql, type MigrationTarget } from './store/migration.js';
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
} from './store/types.js';
export type { SqlDatabase, SqlQueryable, SqlTransaction, SqlResult } from './store/sql-database.js';
export type { TransactionalDb } from './store/transactional-db.js';

export { ATTR, EVENT, METRIC, OUTCOME, OPERATION, MODE, NOT_REPLAYABLE_REASON, BAGGAGE_CORRELATION_ID, INSTRUMENTATION_SCOPE } from './telemetry/names.js';
export type { Outcome, Operation, Mode, NotReplayableReason } from './telemetry/names.js';
export { correlationIdFor } from './telemetry/correlation.js';
export { CorrelationSpanProcessor, DEFAULT_MAX_TRACKED_REQUESTS } from './telemetry/correlation-span-processor.js';
export type { CorrelationSpanProcessorOptions } from './telemetry/correlation-span-processor.js';
export { idempotencyTracing, REQUIRED_PROPAGATORS } from './telemetry/sdk-setup.js';
export type { IdempotencyTracing } from './telemetry/sdk-setup.js';
export { idempotencySampler } from './telemetry/idempotency-sampler.js';
export type { IdempotencySamplerOptions } from './telemetry/idempotency-sampler.js';
export { keyHashAttributes } from './telemetry/key-hash-attributes.js';
export type { KeyHashAttributesOptions } from './telemetry/key-hash-attributes.js';

export { idempotentFetch, IdempotentFetchError } from './client/idempotent-fetch.js';
export type { IdempotentFetchResult } from './client/idempotent-fetch.js';
export {
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_BASE_DELAY_MS,
  DEFAULT_MAX_DELAY_MS,
  DEFAULT_DEADLINE_MS,
  DEFAULT_ATTEMPT_TIMEOUT_MS,
  DEFAULT_RETRY_STATUSES,
} from './client/options.js';
export type { IdempotentFetchOptions, DerivedKey } from './client/options.js';
export type { AttemptRecord, StopReason } from './client/attempt-record.js';
export type { ProblemDetails } from './client/problem-details.js';
export { resendCountAttributes, HTTP_REQUEST_RESEND_COUNT, CLIENT_TELEMETRY } from './client/telemetry.js';
