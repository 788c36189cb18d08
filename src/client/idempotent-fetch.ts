import { randomUUID } from 'node:crypto';
import { context } from '@opentelemetry/api';
import { IdempotencyConfigError, IdempotencyError } from '../errors.js';
import { callListener } from '../hooks.js';
import { discard, errorType, sendAttempt, type AttemptOutcome } from './attempt.js';
import type { AttemptRecord, StopReason } from './attempt-record.js';
import { delay } from './delay.js';
import { resolveFetchOptions, type IdempotentFetchOptions, type ResolvedFetchOptions } from './options.js';
import type { ProblemDetails } from './problem-details.js';
import { RetrySchedule, type RetryableFailure } from './schedule.js';
import { recordRetry } from './telemetry.js';

/** What an idempotent call ended with: the answer, and how it was reached. */
export interface IdempotentFetchResult {
  /** The last answer, body unread: a success, an answer retrying cannot change, or the last "not now". */
  response: Response;
  /** `response.status`. */
  status: number;
  /** The key sent on every attempt. */
  key: string;
  /** Attempts made, the first included. */
  attempts: number;
  /** The answer carried `Idempotent-Replayed: true`: an earlier attempt (or caller) had already executed it. */
  replayed: boolean;
  /** RFC 9457 problem details of an error answer in JSON, read from a clone; undefined otherwise. */
  problem: ProblemDetails | undefined;
  /** Why no further attempt was made; anything but `answer` means the last answer was a "not now". */
  stoppedBy: StopReason;
  /** Every attempt, in order. */
  history: readonly AttemptRecord[];
  /** The whole call, waits included. */
  elapsedMs: number;
}

/** No attempt of the call got an HTTP answer (every one timed out or failed to connect). */
export class IdempotentFetchError extends IdempotencyError {
  override name = 'IdempotentFetchError';
  override readonly code = 'NO_ANSWER';

  constructor(
    readonly key: string,
    readonly stoppedBy: Exclude<StopReason, 'answer'>,
    readonly history: readonly AttemptRecord[],
    cause: unknown,
  ) {
    const last = history.at(-1);
    super(
      `No answer after ${history.length} attempt(s) (${last?.failure ?? 'no attempt'}; stopped by ${stoppedBy === 'attempts' ? 'maxAttempts' : 'deadlineMs'}). ` +
        'The operation may or may not have run: retry later with the same key.',
      { cause },
    );
  }

  get attempts(): number {
    return this.history.length;
  }
}

/**
 * `fetch` for a call to an idempotent service: sends an `Idempotency-Key` (given, derived from the request
 * being served, or random) and the same key on every retry; retries what a retry can fix (no answer, a
 * timed-out attempt, 409 request-in-progress, 429, 502, 503, 504), honouring `Retry-After`, else with
 * exponential backoff and full jitter, within `maxAttempts` and `deadlineMs`; returns any other answer at
 * once, with its problem details. `init.signal` aborts the whole call at once, with its reason.
 *
 * Every attempt is made in the caller's OpenTelemetry context (see `resendCountAttributes`).
 */
export async function idempotentFetch(input: string | URL | Request, init: RequestInit = {}, options: IdempotentFetchOptions = {}): Promise<IdempotentFetchResult> {
  const config = resolveFetchOptions(options);
  const callerSignal = init.signal ?? undefined;
  callerSignal?.throwIfAborted();
  // Built once: a bad URL or header fails here, before anything is sent, and every attempt sends a clone.
  const template = new Request(input, init);
  const key = attachKey(template.headers, config);
  const caller = context.active();
  const startMs = performance.now();
  const schedule = new RetrySchedule(config, config.random, startMs);
  const history: AttemptRecord[] = [];
  let previous: AttemptOutcome | undefined;

  for (;;) {
    // The first attempt always has its budget; a later one may not, after a wait whose timer fired late.
    const budgetMs = schedule.startAttempt(previous ? performance.now() : startMs);
    if (budgetMs === undefined) return finish(previous!, 'deadline');
    if (previous) await discard(previous);
    const attemptStartMs = performance.now();
    const outcome = await sendAttempt({
      template,
      budgetMs,
      resendCount: schedule.attempts - 1,
      caller,
      callerSignal,
      retryStatuses: config.retryStatuses,
    });
    const decision = schedule.afterAttempt(retryableFailure(outcome), performance.now());
    const record = recordOf(outcome, schedule.attempts, key, performance.now() - attemptStartMs, decision.retry ? decision.delayMs : undefined);
    history.push(record);
    // A user hook must never break the call it observes: a throw is reported through diag and ignored.
    callListener('onAttempt', () => config.onAttempt?.(record), 'the call goes on');
    if (!decision.retry) return finish(outcome, decision.stoppedBy);
    recordRetry(caller, schedule.attempts, decision.delayMs, errorType(outcome));
    // Kept until the next attempt starts: should the wait's timer fire past the deadline, this answer is the result.
    await delay(decision.delayMs, callerSignal).catch(async (reason: unknown) => {
      await discard(outcome);
      throw reason;
    });
    previous = outcome;
  }

  function finish(outcome: AttemptOutcome, stoppedBy: StopReason): IdempotentFetchResult {
    const elapsedMs = performance.now() - startMs;
    if (outcome.kind !== 'answer') throw new IdempotentFetchError(key, stoppedBy === 'answer' ? 'attempts' : stoppedBy, history, outcome.error);
    const { response, problem, replayed } = outcome;
    return { response, status: response.status, key, attempts: history.length, replayed, problem, stoppedBy, history, elapsedMs };
  }
}

/** What the schedule needs to know of an outcome: undefined for an answer that retrying cannot change. */
function retryableFailure(outcome: AttemptOutcome): RetryableFailure | undefined {
  if (outcome.kind !== 'answer') return { retryAfterMs: undefined, inProgress: false };
  return outcome.retryable ? { retryAfterMs: outcome.retryAfterMs, inProgress: outcome.inProgress } : undefined;
}

/**
 * Sets the key header and returns the key. A key already in the headers is kept when no key option is
 * given (the caller built it, e.g. with `ctx.idempotency.headers(label)`); two different keys are a bug.
 */
function attachKey(headers: Headers, config: ResolvedFetchOptions): string {
  const present = headers.get(config.headerName) ?? undefined;
  const option = config.key;
  const key = option === undefined ? (present ?? randomUUID()) : typeof option === 'string' ? option : option.from.deriveKey(option.label);
  if (present !== undefined && present !== key) {
    throw new IdempotencyConfigError(`init.headers already has a different ${config.headerName}; pass one key, in the headers or as the key option`);
  }
  headers.set(config.headerName, key);
  return key;
}

function recordOf(outcome: AttemptOutcome, attempt: number, key: string, durationMs: number, nextDelayMs: number | undefined): AttemptRecord {
  if (outcome.kind === 'answer') {
    const { response, replayed, retryAfterMs } = outcome;
    return { attempt, key, status: response.status, failure: undefined, error: undefined, replayed, retryAfterMs, durationMs, nextDelayMs };
  }
  return { attempt, key, status: undefined, failure: outcome.kind, error: outcome.error, replayed: false, retryAfterMs: undefined, durationMs, nextDelayMs };
}
