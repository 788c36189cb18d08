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

/** Functions whose call returns a promise or an iterator, never the value a hook answers with. */
const NOT_A_VALUE = new Set(['AsyncFunction', 'AsyncGeneratorFunction', 'GeneratorFunction']);

/**
 * A synchronous function, or undefined: an `async` (or generator) function given for a hook the library calls
 * without awaiting would return a promise (or an iterator), read as a value (true), a rejection left unhandled.
 */
export function synchronousFunction<T>(value: T, name: string): T {
  optionalFunction(value, name);
  const kind = typeof value === 'function' ? (value.constructor as { name?: unknown } | undefined)?.name : undefined;
  if (typeof kind === 'string' && NOT_A_VALUE.has(kind)) {
    throw new IdempotencyConfigError(`${name} must be a synchronous function returning its answer; got an ${kind}`);
  }
  return value;
}

/** The received value in a message: a number or string as such, anything else by its type. */
function describe(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return value === null ? 'null' : typeof value;
}

/** `true` or `false`, or undefined (an option left out): a string such as `'yes'` would be read as true. */
export function optionalBoolean(value: unknown, name: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    throw new IdempotencyConfigError(`${name} must be true or false; got ${describe(value)}`);
  }
  return value;
}

/**
 * A duration in milliseconds a Node timer can wait: an integer from `min` to 2147483647 (about 24.8 days).
 * Node runs a longer setTimeout after 1 ms, so a larger lease would be renewed in a busy loop.
 */
export function timerMs(value: unknown, name: string, min: number): number {
  return integerInRange(value, name, min, MAX_TIMER_MS);
}

/** The longest delay setTimeout honours (a signed 32-bit count of milliseconds). */
export const MAX_TIMER_MS = 2_147_483_647;

/** An RFC 9110 token (section 5.6.2): what a header field name or a method is made of. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** A header field name (an RFC 9110 token), as given. */
export function headerName(value: unknown, name: string): string {
  if (typeof value !== 'string' || !TOKEN.test(value)) {
    throw new IdempotencyConfigError(`${name} must be a header name (letters, digits and !#$%&'*+-.^_\`|~); got ${describe(value)}`);
  }
  return value;
}

/** An array of RFC 9110 tokens, e.g. header names or methods (`what` names one in the message). */
export function tokenList(value: unknown, name: string, what: string): readonly string[] {
  if (!Array.isArray(value)) throw new IdempotencyConfigError(`${name} must be an array of ${what}s; got ${describe(value)}`);
  // A copy, checked and used alike: a getter or a proxy could give the check one value and the use another.
  // Checked as it is copied, so a sparse array of length 2^32 - 1 stops at its first hole.
  const items: string[] = [];
  const length = (value as unknown[]).length;
  for (let index = 0; index < length; index++) {
    const item: unknown = (value as unknown[])[index];
    if (typeof item !== 'string' || !TOKEN.test(item)) throw new IdempotencyConfigError(`${name}: not a ${what}: ${describe(item)}`);
    items.push(item);
  }
  return items;
}
