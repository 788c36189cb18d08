import { IdempotencyConfigError } from '../errors.js';

/**
 * SQL identifiers cannot be bound as parameters, so every schema and table name is validated against
 * a strict pattern before it reaches SQL text: lower-case letters, digits and underscores, starting with
 * a letter or underscore, at most 48 characters (leaving room for the suffixes of derived index and
 * sequence names within Postgres' 63-byte limit). Anything else, an injection attempt included, throws.
 */
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,47}$/;

export function assertIdentifier(value: unknown, what: string): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value)) {
    throw new IdempotencyConfigError(`${what} must match ${IDENTIFIER.source} (lower-case letters, digits, underscores); got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A validated identifier, double-quoted for SQL text. */
export function quoteIdentifier(value: string): string {
  return `"${value}"`;
}
