import type { Context } from 'koa';
import { newProblemInstance } from '../problem-instance.js';
import { recordProblemOnSpan } from '../telemetry/problem-span.js';

/**
 * RFC 9457 problem details. Each problem has a stable `type` URI (a URN, so it never depends on a
 * web site being up) that clients can switch on; `title` is fixed per type, `detail` is per response.
 * `retryable` (an extension member, as peers send it) says whether a retry with the same key can succeed:
 * true only while the answer is "not now" (in progress, store unavailable, outcome unknown); a client need
 * not hard-code statuses and types. This catalogue is also the source of the OpenAPI components (openapi.ts).
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

export interface ProblemOptions {
  detail: string;
  /** Seconds, sent as `Retry-After`. */
  retryAfterSeconds?: number;
  /** Extension members (RFC 9457 section 3.2). */
  extensions?: Record<string, unknown>;
}

/**
 * What the middleware knows of the request a problem answers, once it has read a valid key: the key (only
 * when `includeKeyInProblems` is on) and the correlation ID (which tags the occurrence ID). Kept beside the
 * Koa context rather than passed down every answer, so each answer stays a one-line call.
 */
export interface ProblemSubject {
  correlationId?: string;
  key?: string;
}

const subjects = new WeakMap<Context, ProblemSubject>();

/** Adds to what the request's problems may say about it (see ProblemSubject). */
export function noteProblemSubject(ctx: Context, subject: ProblemSubject): void {
  subjects.set(ctx, { ...subjects.get(ctx), ...subject });
}

/**
 * Writes a problem response on `ctx`. `instance` is a fresh occurrence ID (problem-instance.ts), also put on
 * the request's span. The raw key is included only where the application opted in (`includeKeyInProblems`):
 * a problem body may end up in logs.
 */
export function sendProblem(ctx: Context, name: ProblemName, options: ProblemOptions): void {
  const problem = PROBLEMS[name];
  const subject = subjects.get(ctx);
  const instance = newProblemInstance(subject?.correlationId);
  recordProblemOnSpan(instance, problem.slug);
  ctx.status = problem.status;
  if (options.retryAfterSeconds !== undefined) ctx.set('Retry-After', String(Math.max(1, Math.ceil(options.retryAfterSeconds))));
  ctx.type = 'application/problem+json';
  ctx.body = JSON.stringify({
    type: problemType(name),
    title: problem.title,
    status: problem.status,
    detail: options.detail,
    instance,
    retryable: problem.retryable,
    ...(subject?.key === undefined ? {} : { idempotency_key: subject.key }),
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
