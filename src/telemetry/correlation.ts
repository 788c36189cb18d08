import { hash } from 'node:crypto';
import { context as contexts, propagation, ROOT_CONTEXT, type Context as OtelContext } from '@opentelemetry/api';
import { BAGGAGE_CORRELATION_ID } from './names.js';

/**
 * The correlation ID of one intent: deterministic per (scope, key), so the original request and every
 * retry share it, and a one-way hash, so neither the key nor the scope can be read back from it.
 */
export function correlationIdFor(scope: string, key: string): string {
  return hash('sha256', `koa-idempotency\n${scope.length}:${scope}\n${key}`).slice(0, 32);
}

/** A key's hash for telemetry (the raw key is recorded only on request). */
export function keyHash(key: string): string {
  return hash('sha256', key).slice(0, 32);
}

/** An upstream correlation ID is accepted only in a safe shape: it ends up in span attributes and baggage. */
const CORRELATION_ID_SHAPE = /^[A-Za-z0-9._:-]{8,128}$/;

/**
 * The correlation ID in W3C baggage, if any (and well-formed). Baggage arrives from the caller, so this is
 * whatever the caller chose: use it only where the caller is trusted (`trustInboundCorrelationId`).
 */
export function upstreamCorrelationId(context: OtelContext): string | undefined {
  const value = propagation.getBaggage(context)?.getEntry(BAGGAGE_CORRELATION_ID)?.value;
  return value !== undefined && CORRELATION_ID_SHAPE.test(value) ? value : undefined;
}

/**
 * Marks the ID the middleware of this process decided, beside the baggage entry: a context value never
 * crosses the wire, so unlike baggage a client cannot forge it. A registered symbol, so that two copies of
 * this package in one process read each other's mark.
 */
const LOCAL_CORRELATION_ID = Symbol.for('koa-idempotency.local-correlation-id');

/** The correlation ID the middleware of this process put in the context, if any. */
export function localCorrelationId(context: OtelContext): string | undefined {
  const value = context.getValue(LOCAL_CORRELATION_ID);
  return typeof value === 'string' ? value : undefined;
}

/**
 * The context with the correlation ID added to its baggage (for downstream services) and marked as local. The ID
 * goes first: the W3C propagator sends at most 180 entries and 8192 characters, dropping what comes after, and a
 * client filling its inbound baggage to those limits kept an ID appended last from every downstream call.
 */
export function withCorrelationBaggage(context: OtelContext, correlationId: string): OtelContext {
  // Entry by entry, not through an object: an object would put integer-like names ("0", "1") before the ID.
  let baggage = propagation.createBaggage({ [BAGGAGE_CORRELATION_ID]: { value: correlationId } });
  for (const [name, entry] of propagation.getBaggage(context)?.getAllEntries() ?? []) {
    if (name !== BAGGAGE_CORRELATION_ID) baggage = baggage.setEntry(name, entry);
  }
  const withBaggage = propagation.setBaggage(context, baggage);
  return withBaggage.setValue(LOCAL_CORRELATION_ID, correlationId);
}

/**
 * The context without a correlation ID that came from the caller's baggage, for a request the middleware
 * does not key: forwarded unchanged, a client's forged ID would reach downstream services that trust their
 * callers (`trustInboundCorrelationId`) and be adopted there. An ID this process decided stays.
 */
export function withoutInboundCorrelationId(context: OtelContext): OtelContext {
  const baggage = propagation.getBaggage(context);
  if (baggage?.getEntry(BAGGAGE_CORRELATION_ID) === undefined || localCorrelationId(context) !== undefined) return context;
  return propagation.setBaggage(context, baggage.removeEntry(BAGGAGE_CORRELATION_ID));
}

const PROBE = ROOT_CONTEXT.setValue(Symbol('koa-idempotency.context-probe'), true);
let contextManagerSeen = false;

/**
 * Whether a context set now reaches the code that runs inside it: not under the API's no-op context manager,
 * the one in place until an SDK registers its own, where building the request's baggage (a few contexts and a
 * baggage per request) is work nothing can read. Probed on each request until a manager is seen, since an SDK
 * may start after the first requests; assumed from then on (the probe costs an AsyncLocalStorage run, and a
 * manager disabled at shutdown leaves nothing to propagate to anyway).
 */
export function contextPropagates(): boolean {
  if (!contextManagerSeen) contextManagerSeen = contexts.with(PROBE, () => contexts.active() === PROBE);
  return contextManagerSeen;
}
