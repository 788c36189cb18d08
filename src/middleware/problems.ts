import type { Context } from 'koa';
import { newProblemInstance } from '../problem-instance.js';
import { recordProblemOnSpan } from '../telemetry/problem-span.js';
import { PROBLEMS, problemType, type ProblemName } from '../protocol.js';
import { handlerOwnsResponse } from './response.js';

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
  const noted = subjects.get(ctx);
  if (noted === undefined) subjects.set(ctx, { ...subject });
  else Object.assign(noted, subject);
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
  // A problem written into it would go out under the handler's head, or its Content-Length before the
  // handler's own body. See IdempotentRequest#replaceResponse for what the middleware does instead.
  if (handlerOwnsResponse(ctx)) return;
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
