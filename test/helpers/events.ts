import type { PostgresStore } from '../../src/entries/postgres.js';

/**
 * What a test synchronises on instead of a sleep: a signal fired by the code it watches, a condition polled
 * every 10 ms up to a deadline, a count of the duplicates that began to wait. No Koa or HTTP module is imported
 * here, so that telemetry tests may load this before their instrumentations patch those.
 */

/** A promise with its resolver: an event a test waits for. */
export interface Signal<T = void> {
  promise: Promise<T>;
  fire(value: T): void;
}

export function signal<T = void>(): Signal<T> {
  let fire!: (value: T) => void;
  const promise = new Promise<T>((resolve) => (fire = resolve));
  return { promise, fire };
}

/**
 * Polls `check` every 10 ms until it returns a value (a row state, a lock in pg_locks); fails after `timeoutMs`,
 * saying `what` it waited for (a function when the message should tell the last state seen).
 */
export async function until<T>(check: () => Promise<T | undefined> | T | undefined, what: string | (() => string), timeoutMs = 10_000): Promise<T> {
  const deadlineMs = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > deadlineMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Counts the duplicates that began to wait on `store` (each watch() that returned); for a test to act once they wait. */
export function countWatches(store: PostgresStore): () => number {
  let watches = 0;
  const watch = store.watch.bind(store);
  store.watch = async (scope, key) => {
    const change = await watch(scope, key);
    watches++;
    return change;
  };
  return () => watches;
}
