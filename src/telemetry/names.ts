/**
 * Every telemetry name of the library, defined once. Names follow the OpenTelemetry naming rules:
 * lower case, dotted namespaces, no unit in a name (units are metadata; durations are in seconds),
 * and an event name never holds a dynamic value (the reason goes in an attribute).
 */

export const INSTRUMENTATION_SCOPE = 'koa-idempotency';

export const ATTR = {
  /**
   * Deterministic per (scope, key); shared by the original request and every retry. An upstream service's
   * ID from baggage instead only where `trustInboundCorrelationId` is on.
   */
  CORRELATION_ID: 'idempotency.correlation_id',
  /** What the layer did with the request: one of OUTCOME. */
  OUTCOME: 'idempotency.outcome',
  /** SHA-256 of the key (hex, first 32 characters), unless raw keys are configured. */
  KEY_HASH: 'idempotency.key_hash',
  /** The raw key; only when `telemetry.recordRawKey` is on. */
  KEY: 'idempotency.key',
  /** The scope (principal or tenant); only when `telemetry.recordScope` is on. */
  SCOPE: 'idempotency.scope',
  /** Age of the record when it was replayed or rejected, in seconds. */
  RECORD_AGE: 'idempotency.record.age',
  /** Why a duplicate was answered the way it was (span event attribute): one of OUTCOME. */
  REASON: 'idempotency.reason',
  /** Trace ID of the request that executed the operation. */
  ORIGINAL_TRACE_ID: 'idempotency.original_trace_id',
  /** 1 for a first execution; more after takeovers. */
  ATTEMPT: 'idempotency.attempt',
  /** Store primitive (metric attribute): claim, complete, release, renew, step, find, sweep. */
  OPERATION: 'idempotency.operation',
  /** Transactional or lease mode (metric attribute). */
  MODE: 'idempotency.mode',
  /** Standard attributes reused on metrics. */
  HTTP_ROUTE: 'http.route',
  HTTP_METHOD: 'http.request.method',
  ERROR_TYPE: 'error.type',
} as const;

/** Baggage entry carrying the correlation ID to downstream services. Never the key itself. */
export const BAGGAGE_CORRELATION_ID = 'idempotency.correlation_id';

export const OUTCOME = {
  /** First execution, response stored. */
  EXECUTED: 'executed',
  /** Took over a record whose owner's lease lapsed, then executed. */
  TAKEOVER: 'takeover',
  /** Stored response replayed. */
  REPLAYED: 'replayed',
  /** Same key still in progress: 409. */
  CONFLICT: 'conflict',
  /** Same key, different request: 422. */
  MISMATCH: 'mismatch',
  /** Executed before, but the response could not be stored: 409. */
  NOT_REPLAYABLE: 'not_replayable',
  /** Executed but the outcome was not stored (an error or 5xx): the key was released. */
  RELEASED: 'released',
  /** Invalid or missing key: 400. */
  INVALID_KEY: 'invalid_key',
  /** The store could not be reached: 503, handler not run. */
  STORE_UNAVAILABLE: 'store_unavailable',
} as const;
export type Outcome = (typeof OUTCOME)[keyof typeof OUTCOME];

export const EVENT = {
  /** A request arrived with a key that was already used (replay, conflict, mismatch, not replayable). */
  DUPLICATE: 'idempotency.duplicate',
  /** The lease of a crashed or stalled owner lapsed and this request took over. */
  TAKEOVER: 'idempotency.takeover',
} as const;

export const METRIC = {
  /** Counter of requests that carried a key, by outcome and route. */
  REQUESTS: 'idempotency.requests',
  /** Histogram (s) of the whole request as seen by the middleware, by outcome and route. */
  REQUEST_DURATION: 'idempotency.request.duration',
  /** Histogram (s) of store primitives, by operation. */
  STORE_OPERATION_DURATION: 'idempotency.store.operation.duration',
  /** Histogram (s) of the time duplicates spent waiting for the first request, by outcome. */
  WAIT_DURATION: 'idempotency.wait.duration',
  /** UpDownCounter of requests holding a claim right now. */
  ACTIVE_REQUESTS: 'idempotency.active_requests',
  /** Counter of expired records deleted by the sweeper. */
  RECORDS_SWEPT: 'idempotency.records.swept',
} as const;
