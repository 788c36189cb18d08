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
  /** Store primitive (metric attribute): one of OPERATION. */
  OPERATION: 'idempotency.operation',
  /** Lease or transactional mode of the middleware (attribute on the request's span): one of MODE. */
  MODE: 'idempotency.mode',
  /**
   * Why an executed request's response was stored as not replayable (attribute on that request's span): one of
   * NOT_REPLAYABLE_REASON. Its retries get `409 response-not-replayable`; this says why.
   */
  NOT_REPLAYABLE_REASON: 'idempotency.not_replayable.reason',
  /**
   * The `instance` (a `urn:uuid:` occurrence ID) of the problem the request was answered with, on the request's
   * span: the Jaeger tag search that finds the trace from a client's error.
   */
  PROBLEM_INSTANCE: 'idempotency.problem.instance',
  /** The problem's name (`key-reused`, `request-in-progress`, ...), beside PROBLEM_INSTANCE. */
  PROBLEM_TYPE: 'idempotency.problem.type',
  /** Status of a record an operator removed (`forget` event attribute): `completed` or `in_progress`. */
  RECORD_STATUS: 'idempotency.record.status',
  /**
   * On a store failure, its SQLSTATE or error code, as `error.type` also carries: on the HTTP server span the
   * stable HTTP conventions (SDK 3's instrumentation) overwrite `error.type` with the status code at the
   * response's end, so this copy is the one that survives there.
   */
  STORE_ERROR_TYPE: 'idempotency.store.error_type',
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
  /** A duplicate of a request still in progress: 409 (or, in `'wait'` mode, a wait that ran out). */
  IN_PROGRESS: 'in_progress',
  /** The key was reused for a different request (another method, path, query or body): 422. */
  KEY_REUSED: 'key_reused',
  /** Executed before, but the response could not be stored: 409. */
  NOT_REPLAYABLE: 'not_replayable',
  /** Executed but the outcome was not stored (an error or 5xx): the key was released. */
  RELEASED: 'released',
  /** Refused before any claim: missing or invalid key, or a body that cannot be fingerprinted (400, 415). */
  INVALID_KEY: 'invalid_key',
  /** The store could not be reached: 503, handler not run. */
  STORE_UNAVAILABLE: 'store_unavailable',
} as const;
export type Outcome = (typeof OUTCOME)[keyof typeof OUTCOME];

/** Values of `idempotency.operation`: the store primitives timed in `idempotency.store.operation.duration`. */
export const OPERATION = {
  /** Transactional mode: the claim's transaction is opened. */
  BEGIN: 'begin',
  CLAIM: 'claim',
  /** Lease mode: the completion; transactional mode: the completion and its COMMIT. */
  COMPLETE: 'complete',
  /** Transactional mode: the COMMIT of the claim's transaction, as reported on the request's span when it fails. */
  COMMIT: 'commit',
  /** Lease mode: the record is deleted so a retry starts afresh. */
  RELEASE: 'release',
  /** Transactional mode: the claim's transaction is rolled back with every write of the handler. */
  ROLLBACK: 'rollback',
  RENEW: 'renew',
  STEP: 'step',
  FIND: 'find',
  SWEEP: 'sweep',
} as const;
export type Operation = (typeof OPERATION)[keyof typeof OPERATION];

/** Values of `idempotency.mode`. */
export const MODE = {
  /** The claim commits at once with a lease; the completion is fenced. */
  LEASE: 'lease',
  /** The claim, the handler's writes and the stored response commit in one transaction. */
  TRANSACTIONAL: 'transactional',
} as const;
export type Mode = (typeof MODE)[keyof typeof MODE];

/** Values of `idempotency.not_replayable.reason`. */
export const NOT_REPLAYABLE_REASON = {
  /** `ctx.respond = false`, writes to `ctx.res`, a proxy: what the client got is not on `ctx`. */
  WRITTEN_AROUND_KOA: 'written_around_koa',
  /** The body is a stream (or a Blob, a Response). */
  STREAM: 'stream',
  /** The body is larger than `maxBodyBytes`. */
  TOO_LARGE: 'too_large',
} as const;
export type NotReplayableReason = (typeof NOT_REPLAYABLE_REASON)[keyof typeof NOT_REPLAYABLE_REASON];

export const EVENT = {
  /** A request arrived with a key that was already used (replayed, in progress, key reused, not replayable). */
  DUPLICATE: 'idempotency.duplicate',
  /** The lease of a crashed or stalled owner lapsed and this request took over. */
  TAKEOVER: 'idempotency.takeover',
  /** An operator removed a record (`koa-idempotency forget`, `store.forget()`): its next request runs afresh. */
  FORGET: 'idempotency.forget',
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
