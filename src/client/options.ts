import { IdempotencyConfigError } from '../errors.js';
import { DEFAULT_HEADER_NAME } from '../protocol.js';
import { integerInRange, nonNegativeNumber, numberAtLeast, numberInRange, optionalFunction, positiveInteger } from '../validation.js';
import { DEFAULT_BASE_DELAY_MS, DEFAULT_MAX_DELAY_MS } from './backoff.js';
import type { AttemptRecord } from './attempt-record.js';

/** Five attempts (four retries) ride out a restart or a short brown-out without multiplying load on a service that is really down. */
export const DEFAULT_MAX_ATTEMPTS = 5;
/** The whole call, waits included: a caller that is itself serving a request cannot wait much longer. */
export const DEFAULT_DEADLINE_MS = 30_000;
/** One attempt: a silent server (a partition, a stuck process) costs this much, then the call retries. */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 10_000;
/**
 * Statuses that mean "not now" rather than "no": rate limited, and a server or gateway that could not
 * answer (502, 503, 504). With an idempotency key the retry is safe even when the first attempt did run.
 * A 500 is not here: it is usually a bug that the same request will hit again.
 */
export const DEFAULT_RETRY_STATUSES: readonly number[] = [429, 502, 503, 504];

export { DEFAULT_BASE_DELAY_MS, DEFAULT_MAX_DELAY_MS };

/** Node's timers fire at once beyond 2^31 - 1 ms (about 24.8 days), so no budget may be longer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A key derived from the request being served: the same on every retry of that request, different per label. */
export interface DerivedKey {
  /** `ctx.idempotency` inside a handler that runs under the idempotency middleware. */
  from: { deriveKey(label: string): string };
  /** What this downstream call is, e.g. `'ledger-entry'`: one key per label. */
  label: string;
}

export interface IdempotentFetchOptions {
  /**
   * The `Idempotency-Key` of this call, sent unchanged on every attempt: a string, or `{ from: ctx.idempotency,
   * label }` to derive it from the request being served (so a retry of that request books the same downstream
   * operation). An `Idempotency-Key` already in `init.headers` is used when this is not set.
   * @default a random UUID (crypto.randomUUID), or the key already in `init.headers`
   */
  key?: string | DerivedKey;
  /**
   * Header that carries the key.
   * @default 'Idempotency-Key'
   */
  headerName?: string;
  /**
   * Attempts in all, the first one included, but for those answered 409 in progress after the first: the
   * operation runs, and waiting for it is bounded by `deadlineMs`.
   * @default 5
   */
  maxAttempts?: number;
  /**
   * Backoff: the wait before retry n is uniform in [0, min(maxDelayMs, baseDelayMs * 2^(n-1))) (full jitter).
   * @default 100
   */
  baseDelayMs?: number;
  /**
   * Cap on one backoff wait, and on a 409 in-progress `Retry-After` (an estimate: a longer one is waited this
   * long, then the call tries again). A 429's or 503's `Retry-After` is honoured even when longer. Any wait
   * ends halfway to the deadline at the latest; one that would be cut below a second (a 429's or 503's: cut
   * at all) stops the call instead.
   * @default 5000
   */
  maxDelayMs?: number;
  /**
   * Budget of the whole call, attempts and waits included; no attempt runs past it, and no wait is started
   * that would end past it (the last answer is returned instead).
   * @default 30000
   */
  deadlineMs?: number;
  /**
   * Timeout of one attempt (until the status line and headers, and the body of a problem answer); a timed-out
   * attempt is retried with the same key. Cut to what is left of `deadlineMs`.
   * @default 10000
   */
  attemptTimeoutMs?: number;
  /**
   * Statuses retried (honouring `Retry-After`). A `409 request-in-progress` problem is always retried; no other
   * 4xx should be listed: retrying cannot change a `400`, a `422 key-reused` or a `409 response-not-replayable`.
   * An error answer whose problem body has a boolean `retryable` member is retried or not as that member
   * says, whatever its status: the server knows whether a retry with the same key can succeed.
   * @default [429, 502, 503, 504]
   */
  retryStatuses?: readonly number[];
  /**
   * Called after every attempt, with what it got and whether (and after what wait) the call retries. Errors it
   * throws are reported through OpenTelemetry `diag` and otherwise ignored.
   * @default undefined
   */
  onAttempt?: (attempt: AttemptRecord) => void;
  /**
   * Source of jitter in [0, 1) (tests pass a seeded one).
   * @default Math.random
   */
  random?: () => number;
}

export interface ResolvedFetchOptions {
  key: string | DerivedKey | undefined;
  headerName: string;
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  deadlineMs: number;
  attemptTimeoutMs: number;
  retryStatuses: ReadonlySet<number>;
  onAttempt: ((attempt: AttemptRecord) => void) | undefined;
  random: () => number;
}

/** Resolves defaults and throws IdempotencyConfigError (a TypeError) for a bad value before anything is sent. */
export function resolveFetchOptions(options: IdempotentFetchOptions): ResolvedFetchOptions {
  const headerName = options.headerName ?? DEFAULT_HEADER_NAME;
  if (!/^[A-Za-z0-9-]+$/.test(headerName)) throw new IdempotencyConfigError(`headerName is not a header name: ${headerName}`);
  const key = options.key;
  if (typeof key === 'string' && key.length === 0) throw new IdempotencyConfigError('key must not be empty');
  if (key !== undefined && typeof key !== 'string' && typeof key?.from?.deriveKey !== 'function') {
    throw new IdempotencyConfigError('key must be a string or { from: ctx.idempotency, label }; ctx.idempotency is only set under the middleware');
  }
  const baseDelayMs = nonNegativeNumber(options.baseDelayMs ?? DEFAULT_BASE_DELAY_MS, 'baseDelayMs');
  const retryStatuses = options.retryStatuses ?? DEFAULT_RETRY_STATUSES;
  for (const status of retryStatuses) integerInRange(status, 'retryStatuses', 100, 599);
  return {
    key,
    headerName,
    maxAttempts: positiveInteger(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, 'maxAttempts'),
    baseDelayMs,
    maxDelayMs: numberAtLeast(options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS, 'maxDelayMs', baseDelayMs, `a number >= baseDelayMs (${baseDelayMs})`),
    deadlineMs: numberInRange(options.deadlineMs ?? DEFAULT_DEADLINE_MS, 'deadlineMs', 1, MAX_TIMER_MS),
    attemptTimeoutMs: numberInRange(options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS, 'attemptTimeoutMs', 1, MAX_TIMER_MS),
    retryStatuses: new Set(retryStatuses),
    onAttempt: optionalFunction(options.onAttempt, 'onAttempt'),
    random: optionalFunction(options.random, 'random') ?? Math.random,
  };
}
