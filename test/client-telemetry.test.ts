import { beforeAll, describe, expect, it } from 'vitest';
import { context, propagation, SpanKind, trace } from '@opentelemetry/api';
import { BAGGAGE_CORRELATION_ID } from '../src/entries/otel.js';
import { CLIENT_TELEMETRY, HTTP_REQUEST_RESEND_COUNT, idempotentFetch, resendCountAttributes } from '../src/entries/client.js';
import { notNow, type ScriptedServer } from './helpers/scripted-server.js';
import { post, QUICK, scriptedClientEnvironment } from './helpers/scripted-client.js';

/** idempotentFetch's attempts as client spans, with resend counts and baggage (test/helpers/scripted-client.ts). */

const client = scriptedClientEnvironment();
const { exporter } = client;
let scripted: ScriptedServer;
beforeAll(() => {
  ({ scripted } = client);
});

describe('OpenTelemetry', () => {
  it("makes every attempt a client span under the caller's span, resends counted, baggage sent each time", async () => {
    scripted.script(['reset', notNow(503, '0'), { status: 201 }]);
    exporter.reset();
    const tracer = trace.getTracer('client-test');
    const baggage = propagation.createBaggage({ [BAGGAGE_CORRELATION_ID]: { value: 'corr-client-test' } });
    const { result, caller } = await context.with(propagation.setBaggage(context.active(), baggage), () =>
      tracer.startActiveSpan('caller', async (span) => {
        const called = await idempotentFetch(`${scripted.url}/entries`, post(), QUICK);
        span.end();
        return { result: called, caller: span };
      }),
    );
    expect(result.attempts).toBe(3);

    const clientSpans = exporter
      .getFinishedSpans()
      .filter((span) => span.kind === SpanKind.CLIENT && span.attributes['url.path'] === '/entries')
      .sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1]);
    expect(clientSpans).toHaveLength(3);
    // Siblings under the caller's span, as the HTTP conventions draw retries; the first is not a resend.
    expect(clientSpans.map((span) => span.parentSpanContext?.spanId)).toEqual(Array(3).fill(caller.spanContext().spanId));
    expect(clientSpans.map((span) => span.attributes[HTTP_REQUEST_RESEND_COUNT])).toEqual([undefined, 1, 2]);
    // Each request carried its own client span as parent, and the caller's baggage.
    expect(scripted.requests.map((request) => String(request.headers.traceparent).split('-')[2])).toEqual(clientSpans.map((span) => span.spanContext().spanId));
    for (const request of scripted.requests) expect(request.headers.baggage).toBe(`${BAGGAGE_CORRELATION_ID}=corr-client-test`);

    const callerSpan = exporter.getFinishedSpans().find((span) => span.spanContext().spanId === caller.spanContext().spanId)!;
    const retries = callerSpan.events.filter((event) => event.name === CLIENT_TELEMETRY.RETRY_EVENT);
    expect(retries.map((event) => event.attributes?.[HTTP_REQUEST_RESEND_COUNT])).toEqual([1, 2]);
    expect(retries[0]!.attributes?.[CLIENT_TELEMETRY.ERROR_TYPE]).toMatch(/^(UND_ERR_SOCKET|ECONNRESET)$/);
    expect(retries[1]!.attributes?.[CLIENT_TELEMETRY.ERROR_TYPE]).toBe('503');
    expect(retries.every((event) => typeof event.attributes?.[CLIENT_TELEMETRY.RETRY_DELAY] === 'number')).toBe(true);
  });

  it('adds no resend count to a fetch made outside idempotentFetch', () => {
    expect(resendCountAttributes()).toEqual({});
  });
});
