import type { Context } from 'koa';

/**
 * RFC 9457 problem details. Each problem has a stable `type` URI (a URN, so it never depends on a
 * web site being up) that clients can switch on; `title` is fixed per type, `detail` is per response.
 */

const TYPE_PREFIX = 'urn:koa-idempotency:problem:';

export const PROBLEMS = {
  keyMissing: { slug: 'key-missing', status: 400, title: 'Idempotency-Key header is required' },
  keyInvalid: { slug: 'key-invalid', status: 400, title: 'Idempotency-Key header is invalid' },
  bodyInvalid: { slug: 'body-invalid', status: 400, title: 'Request body cannot be fingerprinted' },
  /**
   * A body no body parser read, and whose bytes are not kept either: it cannot be told apart from another
   * body under the same key, so it is refused rather than left out of the fingerprint. 415: the server
   * does not take this media type on an idempotent request.
   */
  bodyNotRead: { slug: 'body-not-read', status: 415, title: 'Request body was not read, so it cannot be fingerprinted' },
  inProgress: { slug: 'request-in-progress', status: 409, title: 'A request with this Idempotency-Key is in progress' },
  notReplayable: {
    slug: 'response-not-replayable',
    status: 409,
    title: 'The request with this Idempotency-Key was executed but its response cannot be replayed',
  },
  keyReused: {
    slug: 'key-reused',
    status: 422,
    title: 'Idempotency-Key was already used for a different request',
  },
  storeUnavailable: { slug: 'store-unavailable', status: 503, title: 'Idempotency store is unavailable' },
  requestFailed: { slug: 'request-failed', status: 500, title: 'The request failed and nothing was stored for its Idempotency-Key' },
} as const;

export type ProblemName = keyof typeof PROBLEMS;

/** The `type` URI of a problem, e.g. `urn:koa-idempotency:problem:key-reused`. */
export function problemType(name: ProblemName): string {
  return TYPE_PREFIX + PROBLEMS[name].slug;
}

export interface ProblemOptions {
  detail: string;
  /** Seconds, sent as `Retry-After`. */
  retryAfterSeconds?: number;
  /** Extension members (RFC 9457 section 3.2). */
  extensions?: Record<string, unknown>;
}

/** Writes a problem response on `ctx`. Never includes the raw key: a problem body may end up in logs. */
export function sendProblem(ctx: Context, name: ProblemName, options: ProblemOptions): void {
  const problem = PROBLEMS[name];
  ctx.status = problem.status;
  if (options.retryAfterSeconds !== undefined) ctx.set('Retry-After', String(Math.max(1, Math.ceil(options.retryAfterSeconds))));
  ctx.type = 'application/problem+json';
  ctx.body = JSON.stringify({
    type: problemType(name),
    title: problem.title,
    status: problem.status,
    detail: options.detail,
    instance: ctx.path,
    ...options.extensions,
  });
}

/**
 * `500 request-failed`: a fault of the application (one of its hooks, its response, or its use of the
 * transaction), answered with nothing stored for the key. The error goes to the app's 'error' event, where
 * Koa apps log errors, since it no longer reaches the app's error handling.
 */
export function answerRequestFailed(ctx: Context, error: unknown, detail: string): void {
  if (ctx.app.listenerCount('error') > 0) ctx.app.emit('error', error instanceof Error ? error : new Error(String(error)), ctx);
  sendProblem(ctx, 'requestFailed', { detail });
}
