import { fullJitterDelayMs } from './backoff.js';
import type { StopReason } from './attempt-record.js';

export interface RetryPolicy {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  deadlineMs: number;
  attemptTimeoutMs: number;
}

/** A failed attempt as the schedule sees it: retryable, maybe with the server's own wait. */
export interface RetryableFailure {
  retryAfterMs: number | undefined;
  /**
   * The answer was 409 request-in-progress: its Retry-After estimates when the owner will be done, and the
   * operation may end sooner. Any other Retry-After (429, 503) asks not to come back before it.
   */
  inProgress: boolean;
}

/**
 * Retry-After counts whole seconds, and this library's server advertises one for a key in progress: the shortest
 * wait worth making. A wait is never cut below it (that would poll faster than any server asks to), and 409
 * in-progress attempts, which escape `maxAttempts`, wait at least that long (unless `maxDelayMs` is shorter):
 * a server answering `Retry-After: 0` turned the call into a tight loop.
 */
const SHORTEST_WAIT_MS = 1_000;

export type Decision = { retry: true; delayMs: number } | { retry: false; stoppedBy: StopReason };

/**
 * The timing of one call: how long each attempt may take and how long to wait before the next. Pure (the
 * caller passes the clock), so the deadline arithmetic is tested with a simulated clock.
 *
 * The invariant: with attempts that end within their budget and waits that last what was asked, nothing
 * runs past `startMs + deadlineMs`. Each attempt's budget is its timeout cut to what is left, and a wait
 * ends halfway to the deadline at the latest, leaving the attempt after it the other half.
 */
export class RetrySchedule {
  readonly deadlineAtMs: number;
  #attempts = 0;
  /** Attempts answered 409 in progress: the operation runs, so waiting for it is bounded by the deadline, not by maxAttempts. */
  #inProgressAttempts = 0;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly random: () => number,
    startMs: number,
  ) {
    this.deadlineAtMs = startMs + policy.deadlineMs;
  }

  get attempts(): number {
    return this.#attempts;
  }

  /** The attempts `maxAttempts` bounds: all but those answered 409 in progress, the first always. */
  get countedAttempts(): number {
    return Math.max(1, this.#attempts - this.#inProgressAttempts);
  }

  /**
   * Starts an attempt and returns its budget (ms), or undefined when the deadline has passed: a wait's
   * timer can fire late, and an attempt with no time left would only add load.
   */
  startAttempt(nowMs: number): number | undefined {
    const leftMs = this.deadlineAtMs - nowMs;
    if (leftMs <= 0) return undefined;
    this.#attempts++;
    return Math.min(this.policy.attemptTimeoutMs, leftMs);
  }

  /**
   * What follows an attempt: `failure` undefined means an answer retrying cannot change.
   *
   * A 409 in progress says the operation runs: its Retry-After is an estimate (a 409 used to carry the owner's
   * whole remaining lease, up to 30 s), capped like our backoff at `maxDelayMs` and never under a second (or `maxDelayMs` if shorter),
   * and such attempts do not count against `maxAttempts` (an operation of 10 s must not end a call of 30 s
   * after five polls of a second). A 429's or 503's Retry-After asks not to come back before it: honoured even
   * above `maxDelayMs`.
   *
   * Any wait ends halfway to the deadline at the latest, leaving the next attempt the other half; a wait that
   * would be cut below SHORTEST_WAIT_MS (or below what was wanted, if shorter) stops the call instead, so
   * that attempts do not bunch up at the deadline with budgets too short to be answered.
   */
  afterAttempt(failure: RetryableFailure | undefined, nowMs: number): Decision {
    if (!failure) return { retry: false, stoppedBy: 'answer' };
    if (failure.inProgress) this.#inProgressAttempts++;
    if (this.countedAttempts >= this.policy.maxAttempts) return { retry: false, stoppedBy: 'attempts' };
    const leftMs = this.deadlineAtMs - nowMs;
    if (leftMs < 2) return { retry: false, stoppedBy: 'deadline' };
    const wantedMs = this.#wantedMs(failure);
    const delayMs = Math.min(wantedMs, Math.floor(leftMs / 2));
    const notBefore = !failure.inProgress && failure.retryAfterMs !== undefined;
    if (delayMs < (notBefore ? wantedMs : Math.min(wantedMs, SHORTEST_WAIT_MS))) return { retry: false, stoppedBy: 'deadline' };
    return { retry: true, delayMs };
  }

  #wantedMs(failure: RetryableFailure): number {
    const backoffMs = () => fullJitterDelayMs(this.#attempts, this.policy.baseDelayMs, this.policy.maxDelayMs, this.random);
    if (!failure.inProgress) return failure.retryAfterMs ?? backoffMs();
    const floorMs = Math.max(this.policy.baseDelayMs, Math.min(SHORTEST_WAIT_MS, this.policy.maxDelayMs));
    return Math.max(Math.min(failure.retryAfterMs ?? backoffMs(), this.policy.maxDelayMs), floorMs);
  }
}
