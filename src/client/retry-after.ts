/**
 * `Retry-After` (RFC 9110 section 10.2.3): either delay-seconds (`120`) or an HTTP-date
 * (`Fri, 31 Dec 1999 23:59:59 GMT`). Returns the wait in milliseconds, 0 for a date in the past, or
 * undefined when the header is absent or malformed (the caller then falls back to its own backoff).
 */
export function parseRetryAfterMs(header: string | null | undefined, nowMs: number = Date.now()): number | undefined {
  if (header === null || header === undefined) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) {
    const ms = Number(value) * 1_000;
    return Number.isFinite(ms) ? ms : undefined;
  }
  // Only the date forms: Date.parse alone would also accept "5" or "tomorrow"-ish strings in some engines.
  if (!/[A-Za-z]{3}/.test(value) || !/\d{2}:\d{2}:\d{2}/.test(value)) return undefined;
  const atMs = Date.parse(value);
  if (Number.isNaN(atMs)) return undefined;
  return Math.max(0, atMs - nowMs);
}
