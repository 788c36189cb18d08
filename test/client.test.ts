import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { context, diag, propagation, SpanKind, trace } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { registerTracerProvider, simpleSpanProcessor } from './helpers/otel-sdk.js';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { IdempotencyConfigError, idempotency, problemType } from '../src/index.js';
import { BAGGAGE_CORRELATION_ID } from '../src/entries/otel.js';
import { CLIENT_TELEMETRY, HTTP_REQUEST_RESEND_COUNT, IdempotentFetchError, idempotentFetch, resendCountAttributes, type AttemptRecord } from '../src/entries/client.js';
import { databaseTargets } from './helpers/databases.js';
import { serve } from './helpers/http.js';
import { libraryProblem, notNow, startScriptedServer, type ScriptedServer } from './helpers/scripted-server.js';

/**
 * idempotentFetch against a real HTTP server that answers from a script: which answers are retried, with
 * which key, after which wait, and what the caller gets back. Real sockets and real timers throughout.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Retries without real waits, where the waits are not what a test is about. */
const QUICK = { baseDelayMs: 1, maxDelayMs: 5 };

// A real SDK with the fetch (undici) instrumentation, configured as the README says: the instrumentation makes
// each attempt's client span and asks resendCountAttributes for its resend count. Default propagators
// (tracecontext, baggage). This file is its own process, so the global registration stays here.
const exporter = new InMemorySpanExporter();
registerTracerProvider({ spanProcessors: [simpleSpanProcessor(exporter)] });
registerInstrumentations({ instrumentations: [new UndiciInstrumentation({ startSpanHook: resendCountAttributes })] });

let scripted: ScriptedServer;
beforeAll(async () => {
  scripted = await startScriptedServer();
});
afterAll(async () => {
  await scripted?.close();
});

function post(body: unknown = { amount: 100 }): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

const keysSent = () => scripted.requests.map((request) => request.headers['idempotency-key']);

describe('the key', () => {
  it('is a fresh random UUID when none is given, sent unchanged on every retry with the same body', async () => {
    scripted.script(['reset', notNow(503, '0'), notNow(429), libraryProblem('inProgress', '0'), { status: 201, body: { id: 'p1' } }]);
    const result = await idempotentFetch(`${scripted.url}/payments`, post({ amount: 4200 }), QUICK);

    expect(result.status).toBe(201);
    expect(await result.response.json()).toEqual({ id: 'p1' });
    expect(result.attempts).toBe(5);
    expect(result.key).toMatch(UUID);
    expect(keysSent()).toEqual(Array(5).fill(result.key));
    expect(scripted.requests.map((request) => request.body)).toEqual(Array(5).fill('{"amount":4200}'));
    expect(result.history.map((attempt) => attempt.status ?? attempt.failure)).toEqual(['network-error', 503, 429, 409, 201]);
    expect(result.stoppedBy).toBe('answer');
  });

  it('is a new one for every call', async () => {
    scripted.script([{ status: 204 }]);
    const first = await idempotentFetch(scripted.url, post());
    const second = await idempotentFetch(scripted.url, post());
    expect(first.key).not.toBe(second.key);
  });

  it('is the one given, or the one already in the headers, and two different keys are refused before sending', async () => {
    scripted.script([notNow(503, '0'), { status: 201 }]);
    expect((await idempotentFetch(scripted.url, post(), { ...QUICK, key: 'order-17' })).key).toBe('order-17');
    expect(keysSent()).toEqual(['order-17', 'order-17']);

    scripted.script([{ status: 201 }]);
    const init = { ...post(), headers: { 'content-type': 'application/json', 'Idempotency-Key': 'from-headers' } };
    expect((await idempotentFetch(scripted.url, init)).key).toBe('from-headers');
    await expect(idempotentFetch(scripted.url, init, { key: 'another' })).rejects.toBeInstanceOf(IdempotencyConfigError);
    expect(keysSent()).toEqual(['from-headers']);
  });

  it('is derived from ctx.idempotency inside a handler, so a retry of the outer request sends the same downstream key', async () => {
    const database = await databaseTargets()[0]!.open('client_derived_key');
    const store = await database.store();
    const app = new Koa();
    app.use(idempotency({ store }));
    app.use(async (ctx) => {
      const downstream = await idempotentFetch(scripted.url, post(), { ...QUICK, maxAttempts: 2, key: { from: ctx.idempotency!, label: 'ledger-entry' } });
      ctx.status = downstream.status === 201 ? 201 : 503; // a 5xx is not stored: the outer retry runs again
      ctx.body = { downstreamKey: downstream.key, expected: ctx.idempotency!.deriveKey('ledger-entry') };
    });
    const api = await serve(app);
    try {
      const outer = () => fetch(api.url, { method: 'POST', headers: { 'idempotency-key': 'outer-1' } });
      scripted.script([notNow(503, '0'), notNow(503, '0'), { status: 201 }]);
      const failed = await outer();
      const retried = await outer();
      expect([failed.status, retried.status]).toEqual([503, 201]);
      const { downstreamKey, expected } = (await retried.json()) as { downstreamKey: string; expected: string };
      expect(downstreamKey).toBe(expected);
      expect(downstreamKey).not.toBe('outer-1');
      expect(keysSent()).toEqual([downstreamKey, downstreamKey, downstreamKey]);
    } finally {
      await api.close();
      await database.close();
    }
  });
});

describe('what is retried', () => {
  it.each([
    ['400 (a plain problem)', { status: 400, headers: { 'content-type': 'application/problem+json' }, body: '{"title":"Invalid payment","status":400}' }, 'about:blank'],
    ['422 key-reused', libraryProblem('keyReused'), problemType('keyReused')],
    ['409 response-not-replayable', libraryProblem('notReplayable'), problemType('notReplayable')],
  ])('returns %s at once, problem details parsed and the body still readable', async (_name, step, type) => {
    scripted.script([step, { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), QUICK);
    expect(result.attempts).toBe(1);
    expect(scripted.requests).toHaveLength(1);
    expect(result.stoppedBy).toBe('answer');
    expect(result.problem?.type).toBe(type);
    expect(((await result.response.json()) as { status: number }).status).toBe(result.status);
  });

  it('returns a 500 at once: a bug does not fix itself on a retry', async () => {
    scripted.script([{ status: 500 }, { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), QUICK);
    expect([result.status, result.attempts, result.problem]).toEqual([500, 1, undefined]);
  });

  it('retries 502, 503 and 504 from a gateway, and only the statuses it is told to', async () => {
    scripted.script([notNow(502), notNow(504), notNow(503), { status: 201 }]);
    expect((await idempotentFetch(scripted.url, post(), QUICK)).attempts).toBe(4);
    scripted.script([notNow(502), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, retryStatuses: [503] });
    expect([result.status, result.attempts]).toEqual([502, 1]);
  });

  it('retries an attempt that times out, with the same key', async () => {
    scripted.script(['hang', { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, attemptTimeoutMs: 200 });
    expect([result.status, result.attempts]).toEqual([201, 2]);
    expect(result.history[0]).toMatchObject({ failure: 'timeout', status: undefined });
    expect(result.history[0]!.durationMs).toBeGreaterThanOrEqual(190);
    expect(new Set(keysSent()).size).toBe(1);
  });

  it("follows a problem's boolean retryable member over its status: a retryable 500 is retried, a 503 that is not is returned", async () => {
    const problem = (status: number, retryable: boolean) => ({
      status,
      headers: { 'content-type': 'application/problem+json' },
      body: JSON.stringify({ type: 'urn:example:problem', status, retryable }),
    });
    scripted.script([problem(500, true), { status: 201 }]);
    const retried = await idempotentFetch(scripted.url, post(), QUICK);
    expect([retried.status, retried.attempts]).toEqual([201, 2]);
    expect(new Set(keysSent()).size).toBe(1);
    scripted.script([problem(503, false), { status: 201 }]);
    const returned = await idempotentFetch(scripted.url, post(), QUICK);
    expect([returned.status, returned.attempts, returned.stoppedBy]).toEqual([503, 1, 'answer']);
    // A member that is not a boolean is no answer: the status decides, as for servers that send none.
    scripted.script([{ ...problem(503, true), body: '{"status":503,"retryable":"yes"}' }, { status: 201 }]);
    expect((await idempotentFetch(scripted.url, post(), QUICK)).attempts).toBe(2);
  });

  it('says whether the answer was a replay (Idempotent-Replayed: true)', async () => {
    scripted.script([{ status: 201, headers: { 'idempotent-replayed': 'true' } }]);
    expect((await idempotentFetch(scripted.url, post())).replayed).toBe(true);
    scripted.script([{ status: 201 }]);
    expect((await idempotentFetch(scripted.url, post())).replayed).toBe(false);
  });
});

describe('waits and limits', () => {
  it('waits what Retry-After says in seconds (up to maxDelayMs), over its own shorter backoff', async () => {
    scripted.script([notNow(503, '1'), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, maxDelayMs: 5_000 });
    const [first, second] = scripted.requests;
    expect(second!.atMs - first!.atMs).toBeGreaterThanOrEqual(990);
    expect(result.history[0]).toMatchObject({ retryAfterMs: 1_000, nextDelayMs: 1_000 });
  });

  it('waits until the HTTP date Retry-After gives', async () => {
    scripted.script([notNow(429, new Date(Date.now() + 2_000).toUTCString()), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, maxDelayMs: 5_000 });
    const [first, second] = scripted.requests;
    // The date has whole seconds: the wait is between one and two seconds.
    expect(second!.atMs - first!.atMs).toBeGreaterThanOrEqual(900);
    expect(result.history[0]!.nextDelayMs).toBeGreaterThan(900);
    expect(result.history[0]!.nextDelayMs).toBeLessThanOrEqual(2_000);
  });

  it('stops after maxAttempts and returns the last "not now" answer with its problem', async () => {
    scripted.script([libraryProblem('storeUnavailable', '0')]);
    const result = await idempotentFetch(scripted.url, post(), { ...QUICK, maxAttempts: 3 });
    expect([result.status, result.attempts, result.stoppedBy]).toEqual([503, 3, 'attempts']);
    expect(result.problem?.type).toBe(problemType('storeUnavailable'));
    expect(result.history.at(-1)!.nextDelayMs).toBeUndefined();
  });

  it('keeps retrying within its deadline when a Retry-After ends past it: the wait is cut to half of what is left', async () => {
    scripted.script([libraryProblem('inProgress', '60'), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { deadlineMs: 2_500 });
    expect([result.status, result.attempts, result.stoppedBy]).toEqual([201, 2, 'answer']);
    expect(result.history[0]!.nextDelayMs).toBeLessThanOrEqual(1_250);
    expect(result.elapsedMs).toBeLessThan(2_500);
  });

  it('caps a long Retry-After at maxDelayMs and retries, instead of stopping on it', async () => {
    scripted.script([libraryProblem('inProgress', '29'), { status: 201 }]);
    const result = await idempotentFetch(scripted.url, post(), { maxDelayMs: 300, deadlineMs: 10_000 });
    expect([result.status, result.attempts]).toEqual([201, 2]);
    expect(result.history[0]).toMatchObject({ retryAfterMs: 29_000, nextDelayMs: 300 });
  });

  it('does not come back before a 429 asks: a Retry-After above maxDelayMs is waited in full, one past the deadline stops the call', async () => {
    scripted.script([notNow(429, '1'), { status: 201 }]);
    const waited = await idempotentFetch(scripted.url, post(), { ...QUICK, maxDelayMs: 300 });
    expect(waited.history[0]).toMatchObject({ retryAfterMs: 1_000, nextDelayMs: 1_000 });
    expect(scripted.requests[1]!.atMs - scripted.requests[0]!.atMs).toBeGreaterThanOrEqual(990);

    scripted.script([notNow(429, '30'), { status: 201 }]);
    const stopped = await idempotentFetch(scripted.url, post(), { ...QUICK, deadlineMs: 5_000 });
    expect([stopped.status, stopped.attempts, stopped.stoppedBy]).toEqual([429, 1, 'deadline']);
  });

  it('gives up at the deadline when no attempt gets an answer, with every attempt in the error', async () => {
    scripted.script(['hang']);
    const startedMs = performance.now();
    const error = (await idempotentFetch(scripted.url, post(), { ...QUICK, maxAttempts: 100, attemptTimeoutMs: 300, deadlineMs: 1_000 }).catch(
      (e: unknown) => e,
    )) as IdempotentFetchError;
    expect(error).toBeInstanceOf(IdempotentFetchError);
    expect(error.stoppedBy).toBe('deadline');
    expect(error.attempts).toBeGreaterThanOrEqual(3);
    expect(error.history.every((attempt) => attempt.failure === 'timeout')).toBe(true);
    // Each attempt's timeout is cut to what is left, so the call ends at the deadline (plus timer latency).
    expect(performance.now() - startedMs).toBeLessThan(1_000 + 250);
    expect(new Set(keysSent()).size).toBe(1);
  });

  it('throws IdempotentFetchError after maxAttempts when nothing listens', async () => {
    const closed = await startScriptedServer();
    await closed.close();
    const error = (await idempotentFetch(closed.url, post(), { ...QUICK, maxAttempts: 3 }).catch((e: unknown) => e)) as IdempotentFetchError;
    expect(error).toBeInstanceOf(IdempotentFetchError);
    expect([error.attempts, error.stoppedBy, error.code]).toEqual([3, 'attempts', 'NO_ANSWER']);
    expect(error.history.map((attempt) => attempt.failure)).toEqual(['network-error', 'network-error', 'network-error']);
    expect(error.key).toMatch(UUID);
    expect(error.cause).toBeInstanceOf(TypeError); // fetch's own "fetch failed"
  });
});

describe('aborting', () => {
  it('stops at once during a wait, with the signal reason', async () => {
    scripted.script([notNow(503, '10')]);
    const controller = new AbortController();
    const reason = new Error('the caller gave up');
    // The wait's timer is set right after the attempt is handed to onAttempt: abort on the next turn of the loop.
    const onAttempt = () => void setImmediate(() => controller.abort(reason));
    const startedMs = performance.now();
    await expect(idempotentFetch(scripted.url, { ...post(), signal: controller.signal }, { onAttempt })).rejects.toBe(reason);
    expect(performance.now() - startedMs).toBeLessThan(1_000);
    expect(scripted.requests).toHaveLength(1);
  });

  it('stops at once during an attempt, without retrying it', async () => {
    scripted.script(['hang', { status: 201 }]);
    const startedMs = performance.now();
    const failure = await idempotentFetch(scripted.url, { ...post(), signal: AbortSignal.timeout(150) }, QUICK).catch((e: unknown) => e);
    expect((failure as Error).name).toBe('TimeoutError');
    expect(performance.now() - startedMs).toBeLessThan(1_000);
    // An absence, so checked over a while: ten times the longest backoff, in which a retry would have come.
    await new Promise((resolve) => setTimeout(resolve, 10 * QUICK.maxDelayMs));
    expect(scripted.requests).toHaveLength(1);
  });

  it('sends nothing when the signal is already aborted', async () => {
    scripted.script([{ status: 201 }]);
    await expect(idempotentFetch(scripted.url, { ...post(), signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    expect(scripted.requests).toHaveLength(0);
  });
});

describe('options and hooks', () => {
  it('hands every attempt to onAttempt, and a hook that throws does not break the call', async () => {
    scripted.script([notNow(503, '0'), { status: 201 }]);
    const seen: AttemptRecord[] = [];
    const broken = new Error('a broken hook');
    const reported = vi.spyOn(diag, 'error').mockImplementation(() => undefined);
    try {
      const result = await idempotentFetch(scripted.url, post(), {
        ...QUICK,
        onAttempt: (attempt) => {
          seen.push(attempt);
          throw broken;
        },
      });
      expect(result.status).toBe(201);
      expect(seen).toEqual(result.history);
      expect(seen.map((attempt) => [attempt.attempt, attempt.status, attempt.nextDelayMs])).toEqual([
        [1, 503, 0],
        [2, 201, undefined],
      ]);
      // Reported through diag, as every hook of the library: once per attempt, with the hook's error.
      expect(reported.mock.calls).toEqual([
        ['koa-idempotency: the onAttempt option failed; the call goes on', broken],
        ['koa-idempotency: the onAttempt option failed; the call goes on', broken],
      ]);
    } finally {
      reported.mockRestore();
    }
  });

  it.each([
    [{ maxAttempts: 0 }, 'maxAttempts must be an integer >= 1; got 0'],
    [{ deadlineMs: -1 }, 'deadlineMs must be a number from 1 to 2147483647; got -1'],
    [{ attemptTimeoutMs: Number.NaN }, 'attemptTimeoutMs must be a number from 1 to 2147483647; got NaN'],
    [{ maxDelayMs: 1, baseDelayMs: 10 }, 'maxDelayMs must be a number >= baseDelayMs (10); got 1'],
    [{ retryStatuses: [99] }, 'retryStatuses must be an integer from 100 to 599; got 99'],
    [{ key: '' }, 'key must not be empty'],
    [{ onAttempt: 'log' as never }, 'onAttempt must be a function; got "log"'],
    [{ random: 0.5 as never }, 'random must be a function; got 0.5'],
  ])('refuses %o before sending anything', async (options, message) => {
    scripted.script([{ status: 201 }]);
    const refused = idempotentFetch(scripted.url, post(), options);
    await expect(refused).rejects.toBeInstanceOf(IdempotencyConfigError);
    await expect(refused).rejects.toThrow(message);
    expect(scripted.requests).toHaveLength(0);
  });
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

describe('backoff timing (fake timers)', () => {
  it('waits exactly the full-jitter delays between attempts: [0, base) then [0, 2 * base), capped', async () => {
    // Only setTimeout is faked: the sockets, the server and performance.now() stay real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      scripted.script([notNow(503), notNow(503), notNow(503), { status: 201 }]);
      // random 0.5: waits of 0.5 * 1000, 0.5 * 2000, then 0.5 * min(4000, 3000).
      const decided: AttemptRecord[] = [];
      const options = { baseDelayMs: 1_000, maxDelayMs: 3_000, random: () => 0.5, onAttempt: (attempt: AttemptRecord) => decided.push(attempt) };
      const call = idempotentFetch(scripted.url, post(), options);
      for (const [index, waitMs] of [500, 1_000, 1_500].entries()) {
        // The wait's timer is set right after the attempt is handed to onAttempt.
        await until(() => decided.length === index + 1);
        await vi.advanceTimersByTimeAsync(waitMs - 1);
        expect(scripted.requests).toHaveLength(index + 1); // not a millisecond early
        await vi.advanceTimersByTimeAsync(1);
      }
      await until(() => scripted.requests.length === 4);
      const result = await call;
      expect(result.history.map((attempt) => attempt.nextDelayMs)).toEqual([500, 1_000, 1_500, undefined]);
    } finally {
      vi.useRealTimers();
    }
  });
});

/** Polls on setImmediate, which the fake timers leave alone, while real I/O happens. */
async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadlineMs = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadlineMs) throw new Error('condition not met in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
}
