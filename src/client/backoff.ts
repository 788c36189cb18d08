/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): the
 * wait before retry n is uniform in [0, min(maxDelayMs, baseDelayMs * 2^(n-1))). Full jitter spreads the
 * retries of many callers that failed together (a restart, a brown-out) instead of sending them back in
 * synchronised waves, and it has the least total work of the usual variants.
 */

/** Wait before the first retry is drawn from [0, 100 ms): a blip costs little latency. */
export const DEFAULT_BASE_DELAY_MS = 100;
/** Cap on one computed wait: long enough to let a struggling service recover, short enough to stay useful. */
export const DEFAULT_MAX_DELAY_MS = 5_000;

/** 2^52 is exact in a double; a larger exponent only matters through the cap anyway. */
const MAX_EXPONENT = 52;

/**
 * The wait before retry number `retry` (1 for the first retry), in whole milliseconds.
 * `random` returns a number in [0, 1), as Math.random does.
 */
export function fullJitterDelayMs(retry: number, baseDelayMs: number, maxDelayMs: number, random: () => number): number {
  const exponent = Math.min(Math.max(retry - 1, 0), MAX_EXPONENT);
  const capMs = Math.min(maxDelayMs, baseDelayMs * 2 ** exponent);
  // A random source that strays outside [0, 1) must not stretch a wait past its cap.
  const fraction = Math.min(Math.max(random(), 0), 1);
  return Math.min(Math.floor(fraction * capMs), capMs);
}
