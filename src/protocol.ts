/**
 * The wire protocol, as both sides of it see it: the header names, the problem types (RFC 9457) and the
 * Retry-After defaults. A leaf: the middleware, the client, the sampler's key-hash attributes and the store
 * import it, and it imports nothing, so none of them has to reach into another for a name.
 */

/** The request header that carries the key (draft-ietf-httpapi-idempotency-key-header). */
export const DEFAULT_HEADER_NAME = 'Idempotency-Key';
/** The response header that marks a replay (`true`), as Stripe and the IETF draft's examples name it. */
export const REPLAYED_HEADER = 'Idempotent-Replayed';
export const DEFAULT_MIN_KEY_LENGTH = 1;
export const DEFAULT_MAX_KEY_LENGTH = 255;

/**
 * Retry-After (seconds) of the 409 answered to a duplicate of a request still in progress: a short hint, not
 * the owner's remaining lease (see the in-progress answer in middleware/answers.ts).
 */
export const DEFAULT_IN_PROGRESS_RETRY_AFTER_SECONDS = 1;
/** Retry-After (seconds) of the 503 answered when the store cannot be reached. */
export const DEFAULT_STORE_RETRY_AFTER_SECONDS = 5;

/**
 * RFC 9457 problem details. Each problem has a stable `type` URI (a URN, so it never depends on a
 * web site being up) that clients can switch on; `title` is fixed per type, `detail` is per response.
 * `retryable` (an extension member, as peers send it) says whether a retry with the same key can succeed:
 * true only while the answer is "not now" (in progress, store unavailable, outcome unknown); a client need
 * not hard-code statuses and types. This catalogue is also the source of the OpenAPI components (middleware/openapi.ts).
 */
const TYPE_PREFIX = 'urn:koa-idempotency:problem:';

export const PROBLEMS = {
  keyMissing: { slug: 'key-missing', status: 400, retryable: false, title: 'Idempotency-Key header is required' },
  keyInvalid: { slug: 'key-invalid', status: 400, retryable: false, title: 'Idempotency-Key header is invalid' },
  bodyInvalid: { slug: 'body-invalid', status: 400, retryable: false, title: 'Request body cannot be fingerprinted' },
  /**
   * A body no body parser read, and whose bytes are not kept either: it cannot be told apart from another
   * body under the same key, so it is refused rather than left out of the fingerprint. 415: the server
   * does not take this media type on an idempotent request.
   */
  bodyNotRead: { slug: 'body-not-read', status: 415, retryable: false, title: 'Request body was not read, so it cannot be fingerprinted' },
  inProgress: { slug: 'request-in-progress', status: 409, retryable: true, title: 'A request with this Idempotency-Key is in progress' },
  notReplayable: {
    slug: 'response-not-replayable',
    status: 409,
    retryable: false,
    title: 'The request with this Idempotency-Key was executed but its response cannot be replayed',
  },
  keyReused: {
    slug: 'key-reused',
    status: 422,
    retryable: false,
    title: 'Idempotency-Key was already used for a different request',
  },
  /** Also the answer of a transactional commit whose outcome is unknown: the retry with the same key finds out. */
  storeUnavailable: { slug: 'store-unavailable', status: 503, retryable: true, title: 'Idempotency store is unavailable' },
  /** A fault of the application (a hook, its response, its use of the transaction): the same retry meets it again. */
  requestFailed: {
    slug: 'request-failed',
    status: 500,
    retryable: false,
    title: 'The request failed and nothing was stored for its Idempotency-Key',
  },
} as const;

export type ProblemName = keyof typeof PROBLEMS;

/** The `type` URI of a problem, e.g. `urn:koa-idempotency:problem:key-reused`. */
export function problemType(name: ProblemName): string {
  return TYPE_PREFIX + PROBLEMS[name].slug;
}
