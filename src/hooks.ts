import { diag } from '@opentelemetry/api';

/**
 * The options that are the application's code, called on every request. Like OpenTelemetry contrib's
 * `safeExecuteInTheMiddle`, a hook's failure never escapes as an unexplained error: it is reported through
 * `diag.error` (the hook's name and error only: never the key or the scope) and the caller answers or falls
 * back as documented on the option:
 *
 * - `routeName`: the label falls back to the default (the router's template, else 'unmatched'); the request proceeds;
 * - `required`: counts as `true` (fail closed: a request without a key gets `400 key-missing`, which a key fixes);
 * - `scope`: the request is answered `500 request-failed`, the handler does not run;
 * - `shouldStore`: the key is released and the request answered `500 request-failed`.
 */
export type HookName =
  | 'scope'
  | 'required'
  | 'routeName'
  | 'shouldStore'
  /** The store's periodic sweep failure handler (`PostgresStore` option): its failure must not become an unhandled rejection. */
  | 'onSweepError'
  /** `idempotentFetch()`'s per-attempt callback. */
  | 'onAttempt';

export type HookCall<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * Calls a synchronous hook; a throw is reported with what happens instead (`consequence`) and returned. So is
 * a promise, which a function returning one (not declared `async`, so not refused at construction) gives: it
 * would be read as a value (true), and its rejection left unhandled would end the process.
 */
export function callHook<T>(name: HookName, hook: () => T, consequence: string): HookCall<T> {
  try {
    const value = hook();
    if (isThenable(value)) {
      value.then(undefined, () => undefined);
      throw new TypeError(`the ${name} option returned a promise; it must return its value synchronously`);
    }
    return { ok: true, value };
  } catch (error) {
    reportHookFailure(name, error, consequence);
    return { ok: false, error };
  }
}

/** Calls a hook that may return a promise; a throw or a rejection is reported and returned. */
export async function callAsyncHook<T>(name: HookName, hook: () => T | Promise<T>, consequence: string): Promise<HookCall<T>> {
  try {
    return { ok: true, value: await hook() };
  } catch (error) {
    reportHookFailure(name, error, consequence);
    return { ok: false, error };
  }
}

/**
 * Calls a hook whose value is not used (an event listener: `onSweepError`, `onAttempt`); a throw, or the
 * rejection of the promise an async listener returns, is reported with its `consequence`, never left unhandled.
 */
export function callListener(name: HookName, listener: () => unknown, consequence: string): void {
  try {
    const value = listener();
    if (isThenable(value)) value.then(undefined, (error: unknown) => reportHookFailure(name, error, consequence));
  } catch (error) {
    reportHookFailure(name, error, consequence);
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as PromiseLike<unknown>).then === 'function';
}

export function reportHookFailure(name: HookName, error: unknown, consequence: string): void {
  diag.error(`koa-idempotency: the ${name} option failed; ${consequence}`, error);
}
