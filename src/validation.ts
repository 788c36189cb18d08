import { IdempotencyConfigError } from './errors.js';

/**
 * The one home of the library's option validators. Each returns the value it was given, typed as a number,
 * or throws an IdempotencyConfigError (a TypeError) that names the option, the rule and the value received,
 * so a bad option is refused when the middleware, store, sampler or client is created, not at first use.
 * `name` is the option as the caller wrote it (`'leaseMs'`, `'idempotencySampler: ratio'`).
 */

/** A finite number greater than 0. */
export function positiveNumber(value: unknown, name: string): number {
  return numberAtLeast(value, name, Number.MIN_VALUE, 'a positive number');
}

/** A finite number greater than or equal to 0. */
export function nonNegativeNumber(value: unknown, name: string): number {
  return numberAtLeast(value, name, 0, 'zero or a positive number');
}

/** An integer greater than or equal to 1. */
export function positiveInteger(value: unknown, name: string): number {
  return integerAtLeast(value, name, 1);
}

/** An integer greater than or equal to 0. */
export function nonNegativeInteger(value: unknown, name: string): number {
  return integerAtLeast(value, name, 0);
}

/** An integer greater than or equal to `min` (for a bound that depends on another option, e.g. maxKeyLength >= minKeyLength). */
export function integerAtLeast(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new IdempotencyConfigError(`${name} must be an integer >= ${min}; got ${describe(value)}`);
  }
  return value;
}

/**
 * A finite number greater than or equal to `min`. `rule` words the requirement in the error message
 * (default: `a number >= ${min}`), e.g. "at least 1 (lock_timeout = 0 would turn the timeout off)".
 */
export function numberAtLeast(value: unknown, name: string, min: number, rule = `a number >= ${min}`): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new IdempotencyConfigError(`${name} must be ${rule}; got ${describe(value)}`);
  }
  return value;
}

/** A finite number from `min` to `max`, both included. */
export function numberInRange(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new IdempotencyConfigError(`${name} must be a number from ${min} to ${max}; got ${describe(value)}`);
  }
  return value;
}

/** An integer from `min` to `max`, both included (e.g. an HTTP status from 100 to 599). */
export function integerInRange(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new IdempotencyConfigError(`${name} must be an integer from ${min} to ${max}; got ${describe(value)}`);
  }
  return value;
}

/** A function, or undefined (an option left out): a hook given as anything else would fail every request. */
export function optionalFunction<T>(value: T, name: string): T {
  if (value !== undefined && typeof value !== 'function') {
    throw new IdempotencyConfigError(`${name} must be a function; got ${describe(value)}`);
  }
  return value;
}

/** The received value in a message: a number or string as such, anything else by its type. */
function describe(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return value === null ? 'null' : typeof value;
}
