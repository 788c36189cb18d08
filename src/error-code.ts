/**
 * Reading the `code` of an error the library did not make: node-postgres and PGlite put the SQLSTATE
 * there, Node's network errors their errno name (`ECONNREFUSED`), this library's errors their stable code.
 * One home, so that every reader treats a missing or non-string code the same way.
 */

const SQLSTATE_SHAPE = /^[0-9A-Z]{5}$/;

/** The error's `code` when it is a non-empty string, else undefined. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && code !== '' ? code : undefined;
}

/**
 * The error's SQLSTATE (five digits or capitals, e.g. `40001`, `42P01`), else undefined. A Node system error is
 * never one, though some errno names have the shape: `EPIPE` from a write to a connection Postgres closed was
 * read as Postgres refusing a COMMIT (500, not retryable) where the outcome is unknown (503).
 */
export function sqlstateOf(error: unknown): string | undefined {
  const code = errorCode(error);
  if (code === undefined || !SQLSTATE_SHAPE.test(code) || isSystemError(error)) return undefined;
  return code;
}

/** Node's system errors (a failed syscall) carry the syscall's name and a numeric errno. */
function isSystemError(error: unknown): boolean {
  const { syscall, errno } = error as { syscall?: unknown; errno?: unknown };
  return typeof syscall === 'string' || typeof errno === 'number';
}
