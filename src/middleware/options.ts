import type { Context } from 'koa';
import type { IdempotencyStore } from '../store/types.js';

/**
 * The middleware's options as the application writes them, each with its default. resolved-options.ts checks
 * them and fills in the defaults.
 */

export const DEFAULT_METHODS = ['POST', 'PATCH'] as const;
export const DEFAULT_LEASE_MS = 30_000;
export const DEFAULT_TTL_SECONDS = 24 * 60 * 60;
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_WAIT_MS = 10_000;
/**
 * Longest pause between two re-reads of a waiting duplicate: a few hundred milliseconds bound its wake-up
 * when no notification comes (lost with a connection, discarded by a failed COMMIT), at one cheap read per pause.
 */
export const DEFAULT_WAIT_RECHECK_MS = 250;

/**
 * Stores 2xx and 4xx outcomes; a 5xx is released so the client can retry. A 5xx is ambiguous (the
 * operation may or may not have happened, draft-ietf-httpapi-idempotency-key-header issue 41), and
 * caching it would turn a transient fault into a permanent answer for that key.
 */
export function storeSuccessAndClientErrors(status: number): boolean {
  return status >= 200 && status < 500;
}

export interface TelemetryOptions {
  /**
   * Put the raw key on spans as `idempotency.key`. Off by default: keys can be guessable or carry
   * client data; the SHA-256 `idempotency.key_hash` is always recorded instead.
   * @default false
   */
  recordRawKey?: boolean;
  /**
   * Put the scope (principal or tenant) on spans as `idempotency.scope`.
   * @default false
   */
  recordScope?: boolean;
  /**
   * Take the correlation ID from the caller's W3C baggage (`idempotency.correlation_id`) instead of
   * computing it from (scope, key): the spans, the record, the baggage sent downstream and
   * `ctx.idempotency.correlationId` then carry the caller's ID. Only for a service whose callers are all
   * inside your trust boundary (a downstream service called by your own services): at an edge, a client
   * could split its retries across IDs or adopt another intent's ID in dashboards.
   * @default false (the ID is computed; inbound baggage for it is ignored, and removed from the baggage an
   * unkeyed request forwards)
   */
  trustInboundCorrelationId?: boolean;
}

export interface IdempotencyOptions {
  /** Where records live, e.g. `new PostgresStore({ pool })`. Required. */
  store: IdempotencyStore;
  /**
   * Request header that carries the key.
   * @default 'Idempotency-Key'
   */
  headerName?: string;
  /**
   * Methods the middleware applies to; other requests pass through untouched.
   * @default ['POST', 'PATCH']
   */
  methods?: readonly string[];
  /**
   * Whether a request without a key is refused with 400 (`true`, or a predicate per request). It is called
   * only for a request without a key. A predicate that throws counts as `true` (fail closed: the request gets
   * `400 key-missing`, which a key fixes) and its error is reported through OpenTelemetry `diag`.
   * @default false (requests without a key pass through)
   */
  required?: boolean | ((ctx: Context) => boolean);
  /**
   * The principal or tenant that owns a key. The same key in two scopes is two independent records,
   * so one tenant can never receive another tenant's replay. Set this to your authenticated account.
   * A finite number is used as its decimal string (`42` and `'42'` are one scope). A function that throws,
   * rejects or returns any other value (NaN, undefined, a string over 1024 UTF-8 bytes or holding a NUL or a
   * lone surrogate) fails the request with `500 request-failed` (problem+json; the handler does not run,
   * nothing is stored) rather than share one scope (`'undefined'`) among many callers; the error is reported
   * through OpenTelemetry `diag` and the app's `'error'` event.
   * @default () => '' (one global scope)
   */
  scope?: (ctx: Context) => string | number | Promise<string | number>;
  /** Shortest key accepted (a shorter one gets `400 key-invalid`). @default 1 */
  minKeyLength?: number;
  /**
   * Longest key accepted (a longer one gets `400 key-invalid`); at most 1024, which Postgres' index on
   * (scope, key) can hold beside a scope of up to 1024 bytes.
   * @default 255
   */
  maxKeyLength?: number;
  /**
   * Request headers (names) that belong to the fingerprint, e.g. `['content-type']`.
   * @default []
   */
  fingerprintHeaders?: readonly string[];
  /**
   * Lease of an in-progress record. The lease is renewed every `leaseMs / 3` while the handler runs; if
   * the process dies, a retry may take the record over once the lease has run out. Must be shorter than
   * `ttlSeconds` (see there), and at most 2147483647 (the longest Node timer).
   * @default 30000
   */
  leaseMs?: number;
  /**
   * How long a record (and its replay) is kept. Must be longer than `leaseMs`, else `idempotency()` throws:
   * an expired record counts as absent, so a record that expired under a live lease could be taken over
   * by a different request while the first one still runs. At most 100 years (3153600000).
   * @default 86400 (24 hours)
   */
  ttlSeconds?: number;
  /**
   * Largest response body stored for replay; a larger (or streamed) response completes the record as
   * "not replayable", and a retry gets a 409 problem instead of a second execution.
   * @default 1048576 (1 MiB)
   */
  maxBodyBytes?: number;
  /**
   * Which final statuses are stored (and replayed); the others release the key. A predicate that throws
   * releases the key and answers `500 request-failed`; the error is reported through OpenTelemetry `diag`
   * and the app's `'error'` event.
   * @default storeSuccessAndClientErrors (2xx and 4xx)
   */
  shouldStore?: (status: number) => boolean;
  /**
   * Response headers (names) never stored, on top of the built-in list (Set-Cookie, Authorization,
   * hop-by-hop headers, ...).
   * @default []
   */
  excludeHeaders?: readonly string[];
  /**
   * Run the handler inside the claim's Postgres transaction (`ctx.idempotency.db`), so the business
   * writes and the stored response commit together: exactly once, even across crashes.
   * @default false (lease mode)
   */
  transactional?: boolean;
  /**
   * What a duplicate gets while the first request is still running: `'reject'` answers 409 with
   * Retry-After; `'wait'` holds it up to `waitMs` and replays the first response when it completes.
   * @default 'reject'
   */
  onInProgress?: 'reject' | 'wait';
  /**
   * Longest wait of a duplicate in `'wait'` mode before it gets the 409 (at most 2147483647).
   * @default 10000
   */
  waitMs?: number;
  /**
   * Longest pause between two re-reads of the record by a waiting duplicate (`'wait'` mode). A waiter is
   * woken early by the store's notification; these re-reads (25 ms, then doubling up to this cap, and at
   * the owner's lease expiry) bound its wake-up when none comes, and take over a crashed owner's key
   * as soon as its lease lapses.
   * @default 250
   */
  waitRecheckMs?: number;
  /**
   * Retry-After (seconds) sent when the store is unavailable (503).
   * @default 5
   */
  storeRetryAfterSeconds?: number;
  /**
   * Low-cardinality route label for metrics. A function that throws or returns a non-string does not fail
   * the request: the label falls back to the default and the error is reported through OpenTelemetry `diag`.
   * @default the @koa/router route template (`ctx._matchedRoute`), else 'unmatched'
   */
  routeName?: (ctx: Context) => string;
  /**
   * Put the raw key in every problem body answered after a valid key was read, as the `idempotency_key`
   * extension member. Off by default: problem bodies end up in client and proxy logs, where a key (which
   * can be guessable or carry client data) would let a reader replay another's request.
   * @default false
   */
  includeKeyInProblems?: boolean;
  /**
   * More response header names that mark a replay, each sent as `<name>: true` beside
   * `Idempotent-Replayed: true`, for clients written against servers that use another name
   * (`Idempotency-Replayed`, `X-Idempotent-Replayed`). Like the marker, an alias is never stored or replayed
   * from a handler's response.
   * @default [] (only `Idempotent-Replayed`)
   */
  replayedHeaderAliases?: readonly string[];
  telemetry?: TelemetryOptions;
}
