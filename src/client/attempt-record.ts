/** What one attempt of an idempotent call got: handed to `onAttempt` and kept in the call's `history`. */
export interface AttemptRecord {
  /** 1 for the first attempt (`http.request.resend_count` is `attempt - 1`). */
  attempt: number;
  /** The key sent: the same on every attempt of one call. */
  key: string;
  /** The HTTP status, or undefined when no answer came (see `failure`). */
  status: number | undefined;
  /** Why no answer came: the attempt's budget ran out, or the connection failed (refused, reset, DNS). */
  failure: 'timeout' | 'network-error' | undefined;
  /** The error behind `failure`, as fetch reported it. */
  error: unknown;
  /** The answer carried `Idempotent-Replayed: true`: the server replayed a stored response. */
  replayed: boolean;
  /** The answer's `Retry-After`, in milliseconds, when it had a valid one. */
  retryAfterMs: number | undefined;
  /** From sending to the classified answer (or the failure). */
  durationMs: number;
  /** The wait before the next attempt; undefined when no attempt follows. */
  nextDelayMs: number | undefined;
}

/**
 * Why a call made no further attempt: `answer` (an answer that retrying cannot change, success included),
 * `attempts` (maxAttempts used up), `deadline` (no time left for a wait and another attempt).
 */
export type StopReason = 'answer' | 'attempts' | 'deadline';
