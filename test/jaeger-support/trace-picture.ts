import { ATTR, EVENT } from '../../src/entries/otel.js';
import type { PictureSpan, TracePicture } from '../../scripts/pictures/trace-picture.js';
import { serverSpan, serviceOf, tag, type JaegerSpan, type JaegerTrace } from './jaeger-api.js';

/**
 * The input of scripts/pictures/trace-picture.ts from two traces as Jaeger's /api/traces returned them: the
 * original and a retry of the same intent, their spans in tree order, the retry's idempotency.duplicate event and
 * its link (a FOLLOWS_FROM reference in this API) to the original's server span.
 */
const NAME_LENGTH = 48;

export function duplicatePicture(original: JaegerTrace, retry: JaegerTrace, service: string): TracePicture {
  const originMs = Math.min(...original.spans.map((span) => span.startTime)) / 1_000;
  const toMs = (us: number) => us / 1_000 - originMs;
  const spans = [...inTreeOrder(original, 'original', toMs), ...inTreeOrder(retry, 'retry', toMs)];
  const retryServer = serverSpan(retry, service);
  if (!retryServer) throw new Error(`trace ${retry.traceID} has no ${service} server span`);
  const duplicate = retryServer.logs.find((log) => tag(log.fields, 'event') === EVENT.DUPLICATE);
  const links = retryServer.references.filter((reference) => reference.refType === 'FOLLOWS_FROM' && reference.traceID === original.traceID);
  return {
    title: 'A retry (replayed) beside its original, as Jaeger stores them',
    subtitle: [
      `Two traces of one intent, correlation ID ${String(tag(retryServer.tags, ATTR.CORRELATION_ID))}: the original ran the payment and the ledger call;`,
      'the retry was answered from the stored response, with the idempotency.duplicate event and a span link back (test/system/jaeger-e2e.test.ts).',
    ],
    spans,
    events: duplicate
      ? [{ spanId: retryServer.spanID, name: EVENT.DUPLICATE, detail: `reason=${String(tag(duplicate.fields, ATTR.REASON))}`, atMs: toMs(duplicate.timestamp) }]
      : [],
    links: links.map((link) => ({ fromSpanId: retryServer.spanID, toSpanId: link.spanID, label: 'span link to the original server span' })),
  };
}

/** Depth-first from the roots, children by start time: the order Jaeger's timeline shows. */
function inTreeOrder(trace: JaegerTrace, label: string, toMs: (us: number) => number): PictureSpan[] {
  const ids = new Set(trace.spans.map((span) => span.spanID));
  const parentOf = (span: JaegerSpan) => span.references.find((reference) => reference.refType === 'CHILD_OF' && ids.has(reference.spanID))?.spanID;
  const byStart = (a: JaegerSpan, b: JaegerSpan) => a.startTime - b.startTime;
  const result: PictureSpan[] = [];
  const visit = (span: JaegerSpan) => {
    const name = span.operationName.length > NAME_LENGTH ? `${span.operationName.slice(0, NAME_LENGTH - 1)}…` : span.operationName;
    result.push({
      trace: label,
      service: serviceOf(trace, span) ?? '?',
      name,
      startMs: toMs(span.startTime),
      endMs: toMs(span.startTime + span.duration),
      spanId: span.spanID,
    });
    for (const child of trace.spans.filter((candidate) => parentOf(candidate) === span.spanID).sort(byStart)) visit(child);
  };
  for (const root of trace.spans.filter((span) => parentOf(span) === undefined).sort(byStart)) visit(root);
  return result;
}
