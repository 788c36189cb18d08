import { context, type Context } from '@opentelemetry/api';
import { errorCode } from '../error-code.js';
import { REPLAYED_HEADER } from '../protocol.js';
import { isProblem, readProblem, type ProblemDetails } from './problem-details.js';
import { parseRetryAfterMs } from './retry-after.js';
import { withResendCount } from './telemetry.js';

export interface Answer {
  kind: 'answer';
  response: Response;
  problem: ProblemDetails | undefined;
  replayed: boolean;
  retryAfterMs: number | undefined;
  /** A "not now" answer (a retry status, or 409 request-in-progress), as opposed to one retrying cannot change. */
  retryable: boolean;
  /** A 409 request-in-progress: the operation runs elsewhere (not just any 409 that says it is retryable). */
  inProgress: boolean;
}

export interface NoAnswer {
  kind: 'timeout' | 'network-error';
  error: unknown;
}

export type AttemptOutcome = Answer | NoAnswer;

export interface AttemptSpec {
  /** The request as the caller built it, key included; each attempt sends a clone, so a body can be sent again. */
  template: Request;
  budgetMs: number;
  resendCount: number;
  /** The context the call was made in: the attempt's client span is its child, and its baggage is sent. */
  caller: Context;
  callerSignal: AbortSignal | undefined;
  retryStatuses: ReadonlySet<number>;
}

/**
 * One attempt: the request within its budget, the answer classified. A timeout or a network failure is an
 * outcome, not an error; the caller's own abort is thrown as is (its `signal.reason`), at once.
 */
export async function sendAttempt(spec: AttemptSpec): Promise<AttemptOutcome> {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(new DOMException(`the attempt got no answer within ${spec.budgetMs} ms`, 'TimeoutError')), spec.budgetMs);
  const signal = spec.callerSignal ? AbortSignal.any([spec.callerSignal, timeout.signal]) : timeout.signal;
  try {
    const attemptContext = withResendCount(spec.caller, spec.resendCount);
    const response = await context.with(attemptContext, () => fetch(spec.template.clone(), { signal }));
    // The whole answer arrives within the attempt (read from a clone; the caller's copy stays readable): an
    // answer cut off after its head, as a server that could not commit cuts it, is a failed attempt, retried
    // under the same key, not a success with an unreadable body.
    await response.clone().arrayBuffer();
    // A 409 is only retryable as request-in-progress: its problem body decides.
    const problem = await readProblem(response);
    spec.callerSignal?.throwIfAborted();
    if (timeout.signal.aborted) return { kind: 'timeout', error: timeout.signal.reason };
    const retryable = retryableAnswer(response.status, problem, spec.retryStatuses);
    return {
      kind: 'answer',
      response,
      problem,
      replayed: response.headers.get(REPLAYED_HEADER) === 'true',
      retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after')),
      retryable,
      inProgress: response.status === 409 && isProblem(problem, 'inProgress'),
    };
  } catch (error) {
    if (spec.callerSignal?.aborted) throw spec.callerSignal.reason;
    if (timeout.signal.aborted) return { kind: 'timeout', error };
    return { kind: 'network-error', error };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether retrying with the same key can change the answer. A problem's boolean `retryable` member decides
 * when the server sent one (it knows: a 503 of an outcome it could not confirm, a 422 no retry will fix);
 * otherwise the statuses, and a 409 only as request-in-progress, as for servers that send no such member.
 */
function retryableAnswer(status: number, problem: ProblemDetails | undefined, retryStatuses: ReadonlySet<number>): boolean {
  if (typeof problem?.retryable === 'boolean') return problem.retryable;
  return retryStatuses.has(status) || (status === 409 && isProblem(problem, 'inProgress'));
}

/** A low-cardinality name for why an attempt is retried (`error.type`): the status, `timeout`, or the error's code. */
export function errorType(outcome: AttemptOutcome): string {
  if (outcome.kind === 'answer') return String(outcome.response.status);
  if (outcome.kind === 'timeout') return 'timeout';
  // fetch's own TypeError ("fetch failed") carries the socket's code (ECONNREFUSED, UND_ERR_SOCKET) on its cause.
  const error = outcome.error as { name?: unknown; cause?: { name?: unknown } } | null | undefined;
  const name = error?.cause?.name ?? error?.name;
  return errorCode(error?.cause) ?? errorCode(error) ?? (typeof name === 'string' && name.length > 0 ? name : '_OTHER');
}

/** Frees the connection of an answer that is not handed to the caller. */
export async function discard(outcome: AttemptOutcome): Promise<void> {
  if (outcome.kind === 'answer') await outcome.response.body?.cancel().catch(() => undefined);
}
