import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { problemType } from '../../src/index.js';
import { idempotentFetch } from '../../src/entries/client.js';

/**
 * Attacks on idempotentFetch's waits: a 409 request-in-progress advertises Retry-After: 1, and the client caps each
 * wait at maxDelayMs and at half of what is left of deadlineMs. Can the client give up on an operation that
 * completes soon after, run past its deadline, or hammer a server that asked it to wait?
 */

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/** A loopback server answering `answer(attempt, elapsedMs)`; records when each attempt arrived. */
async function scriptedServer(answer: (attempt: number, elapsedMs: number) => { status: number; headers?: Record<string, string>; body: string }, latencyMs = 0) {
  const arrivals: number[] = [];
  const startedAt = performance.now();
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const elapsedMs = performance.now() - startedAt;
      arrivals.push(elapsedMs);
      const { status, headers = {}, body } = answer(arrivals.length, elapsedMs);
      // The server's own latency (a real service takes some ms to answer), not a synchronisation.
      setTimeout(() => {
        res.writeHead(status, { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json', ...headers });
        res.end(body);
      }, latencyMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/op`, arrivals, startedAt };
}

const inProgress = {
  status: 409,
  headers: { 'retry-after': '1' },
  body: JSON.stringify({ type: problemType('inProgress'), title: 'Request in progress', status: 409 }),
};

describe('idempotentFetch against Retry-After', () => {
  it('with default options, does not give up on an operation still in progress that completes 4.5 s in (well within the 30 s deadline)', async () => {
    const server = await scriptedServer((_attempt, elapsedMs) =>
      elapsedMs < 4_500 ? inProgress : { status: 201, headers: { 'idempotent-replayed': 'true' }, body: '{"ok":true}' },
    );
    const result = await idempotentFetch(server.url, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    console.info('[client] attempts arrived at (ms):', server.arrivals.map(Math.round), 'stoppedBy', result.stoppedBy, 'elapsed', Math.round(result.elapsedMs));
    expect({ status: result.status, stoppedBy: result.stoppedBy }).toEqual({ status: 201, stoppedBy: 'answer' });
  });

  it('does not run past its deadline when every answer says Retry-After: 1 (deadlineMs 2500, maxAttempts 50)', async () => {
    const server = await scriptedServer(() => inProgress);
    const started = performance.now();
    // Only the deadline is checked here: whether it returns or throws at the deadline is the "20 ms" case below.
    await idempotentFetch(server.url, { method: 'POST', body: '{}' }, { deadlineMs: 2_500, maxAttempts: 50 }).catch(() => undefined);
    const tookMs = performance.now() - started;
    expect(tookMs).toBeLessThan(2_500 + 200);
  });

  it('does not hammer a server that asked for Retry-After: 1: at most 2 attempts in the last second before the deadline (deadlineMs 4000, maxAttempts 50)', async () => {
    const server = await scriptedServer(() => inProgress);
    const result = await idempotentFetch(server.url, { method: 'POST', body: '{}' }, { deadlineMs: 4_000, maxAttempts: 50 }).catch((error: Error) => ({
      stoppedBy: `threw: ${error.message}`,
    }));
    const arrivals = server.arrivals.map((ms) => Math.round(ms));
    console.info('[client] attempts arrived at (ms) for Retry-After 1:', arrivals, 'stoppedBy', result.stoppedBy);
    const gaps = arrivals.slice(1).map((ms, i) => ms - arrivals[i]!);
    // The server asked for one second between attempts: a client may stop earlier, never come back sooner than asked.
    expect(gaps.filter((gap) => gap < 900)).toEqual([]);
  });

  it('returns the last 409 at its deadline (stoppedBy deadline) instead of throwing "no answer", against a server that answers in 20 ms', async () => {
    const server = await scriptedServer(() => inProgress, 20);
    const outcome = await idempotentFetch(server.url, { method: 'POST', body: '{}' }, { deadlineMs: 2_500, maxAttempts: 50 }).then(
      (result) => ({ status: result.status, stoppedBy: result.stoppedBy }),
      (error: Error) => ({ threw: error.message }),
    );
    console.info('[client] 20 ms server, attempts at (ms):', server.arrivals.map(Math.round), JSON.stringify(outcome));
    expect(outcome).toEqual({ status: 409, stoppedBy: 'deadline' });
  });

  it('caps the number of attempts on 429 Retry-After: 0 at maxAttempts (5 by default)', async () => {
    const server = await scriptedServer(() => ({ status: 429, headers: { 'retry-after': '0' }, body: '{"status":429}' }));
    const result = await idempotentFetch(server.url, { method: 'POST', body: '{}' });
    expect(result.status).toBe(429);
    expect(server.arrivals.length).toBe(5);
  });

  it('on 503 with a Retry-After HTTP-date in the past (retry now), stops at maxAttempts', async () => {
    const past = new Date(Date.now() - 60_000).toUTCString();
    const server = await scriptedServer(() => ({ status: 503, headers: { 'retry-after': past }, body: '{"status":503}' }));
    const result = await idempotentFetch(server.url, { method: 'POST', body: '{}' }, { maxAttempts: 5 });
    const arrivals = server.arrivals.map((ms) => Math.round(ms));
    console.info('[client] 503 with past Retry-After date, attempts at (ms):', arrivals);
    expect(result.status).toBe(503);
    expect(arrivals.length).toBe(5);
  });
});
