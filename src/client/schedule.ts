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
   * What follows an attempt: `failure` undefined means an answer retrying cannot change. Any wait ends halfway
   * to the deadline at the latest. A 409's Retry-After is an estimate (a 409 used to carry the owner's whole
   * remaining lease, up to 30 s), capped like our backoff at `maxDelayMs`, so a long hint never ends a call
   * whose operation completes moments later. A 429's or 503's asks not to come back before it: honoured even
   * above `maxDelayMs`, and the call stops when it does not fit, instead of hammering a server that said "not yet".
   */
  afterAttempt(failure: RetryableFailure | undefined, nowMs: number): Decision {
    if (!failure) return { retry: false, stoppedBy: 'answer' };
    if (this.#attempts >= this.policy.maxAttempts) return { retry: false, stoppedBy: 'attempts' };
    const latestMs = Math.floor((this.deadlineAtMs - nowMs) / 2);
    if (failure.retryAfterMs !== undefined && !failure.inProgress) {
      return failure.retryAfterMs <= latestMs ? { retry: true, delayMs: failure.retryAfterMs } : { retry: false, stoppedBy: 'deadline' };
    }
    if (latestMs < 1) return { retry: false, stoppedBy: 'deadline' };
    const wantedMs = failure.retryAfterMs ?? fullJitterDelayMs(this.#attempts, this.policy.baseDelayMs, this.policy.maxDelayMs, this.random);
    return { retry: true, delayMs: Math.min(wantedMs, this.policy.maxDelayMs, latestMs) };
  }
}
