import type { Context } from 'koa';
import { callHook, reportHookFailure } from '../hooks.js';

/**
 * The middleware's per-request hooks that must never throw (hooks.ts says what each falls back to): they
 * decide whether and how a request is counted before any answer exists to carry a failure.
 */

/** `routeName`, never throwing: a failure or a non-string falls back to the default label. */
export function guardRouteName(routeName: (ctx: Context) => string): (ctx: Context) => string {
  return (ctx) => {
    const call = callHook('routeName', () => routeName(ctx), 'the route label falls back to the default');
    if (!call.ok) return defaultRouteName(ctx);
    if (typeof call.value === 'string') return call.value;
    reportHookFailure('routeName', new TypeError(`routeName returned ${typeof call.value}, not a string`), 'the route label falls back to the default');
    return defaultRouteName(ctx);
  };
}

/** `required`, never throwing: a failure counts as `true`. */
export function guardRequired(required: (ctx: Context) => boolean): (ctx: Context) => boolean {
  return (ctx) => {
    const call = callHook('required', () => required(ctx), 'the key is treated as required (400 key-missing)');
    return call.ok ? Boolean(call.value) : true;
  };
}

/** The @koa/router route template, else 'unmatched': `routeName`'s default, and its fallback when it fails. */
export function defaultRouteName(ctx: Context): string {
  const matched = (ctx as Context & { _matchedRoute?: unknown })._matchedRoute;
  return typeof matched === 'string' ? matched : 'unmatched';
}
