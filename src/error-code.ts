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

/** The error's SQLSTATE (five digits or capitals, e.g. `40001`, `42P01`), else undefined. */
export function sqlstateOf(error: unknown): string | undefined {
  const code = errorCode(error);
  return code !== undefined && SQLSTATE_SHAPE.test(code) ? code : undefined;
}
