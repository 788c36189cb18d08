import { context } from '@opentelemetry/api';
import { ATTR } from './names.js';
import { requestSpanOf } from './span-stamping.js';

/**
 * Puts a problem's occurrence ID and type on the request's span (the HTTP server span when a
 * CorrelationSpanProcessor is registered, else the active span), so one tag search on
 * `idempotency.problem.instance` finds the trace of the answer a client was given.
 */
export function recordProblemOnSpan(instance: string, slug: string): void {
  requestSpanOf(context.active())?.setAttributes({ [ATTR.PROBLEM_INSTANCE]: instance, [ATTR.PROBLEM_TYPE]: slug });
}
