import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { problemType } from '../../src/index.js';
import { idempotentFetch } from '../../src/entries/client.js';

/**
 * Round 2 on idempotentFetch: 409 in-progress attempts no longer count against maxAttempts, so the deadline
 * alone bounds them. A server (hostile or broken) that answers 409 in progress with Retry-After: 0 (or an
 * HTTP date in the past) forever must not be polled in a tight loop; an answer whose status line arrived must
 * not be turned into a thrown NO_ANSWER; the deadline must hold.
 */

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

type Reply = (req: http.IncomingMessage, res: http.ServerResponse, attempt: number) => void;

async function server(reply: Reply) {
  let attempts = 0;
  const srv = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => reply(req, res, ++attempts));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/op`, attempts: () => attempts };
}

const inProgress = (retryAfter: string) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
  res.writeHead(409, { 'content-type': 'application/problem+json', 'retry-after': retryAfter });
  res.end(JSON.stringify({ type: problemType('inProgress'), title: 'Request in progress', status: 409 }));
};

describe('idempotentFetch against a server that never stops answering 409 in progress', () => {
  it.each(['0', 'Thu, 01 Jan 1970 00:00:00 GMT'])(
    'Retry-After %j with baseDelayMs 0: the deadline alone bounds the 409 polls, which must not become a tight loop (at most ~1 per second)',
    async (retryAfter) => {
      const srv = await server(inProgress(retryAfter));
      const deadlineMs = 2_000;
      const result = await idempotentFetch(srv.url, { method: 'POST', body: '{}' }, { deadlineMs, baseDelayMs: 0, maxDelayMs: 1_000 });
      expect(result.status).toBe(409);
      // One poll per second of deadline, plus the first, plus slack: far below a busy loop.
      expect(srv.attempts()).toBeLessThanOrEqual(deadlineMs / 1_000 + 3);
    },
  );

  it('Retry-After 0 with the default options: polls are spaced by at least a second, and the deadline bounds them', async () => {
    const srv = await server(inProgress('0'));
    const deadlineMs = 2_000;
    const result = await idempotentFetch(srv.url, { method: 'POST', body: '{}' }, { deadlineMs });
    const gaps = result.history.map((h) => h.nextDelayMs).filter((d): d is number => d !== undefined);
    expect(gaps.every((d) => d >= 1_000)).toBe(true);
    expect(result.attempts).toBeLessThanOrEqual(deadlineMs / 1_000 + 2);
    expect(result.elapsedMs).toBeLessThanOrEqual(deadlineMs + 200);
  });

  it('a 409 problem that is not request-in-progress but says retryable: true does not escape maxAttempts', async () => {
    const srv = await server((_req, res) => {
      res.writeHead(409, { 'content-type': 'application/problem+json' });
      res.end(JSON.stringify({ type: 'https://example.test/conflict', status: 409, retryable: true }));
    });
    const result = await idempotentFetch(srv.url, { method: 'POST', body: '{}' }, { deadlineMs: 3_000, baseDelayMs: 1, maxDelayMs: 2, maxAttempts: 3 });
    expect(srv.attempts()).toBeLessThanOrEqual(3);
    expect(result.status).toBe(409);
  });
});

describe('idempotentFetch: an answer that arrived is returned, not thrown', () => {
  it('a 503 with Retry-After longer than what is left of the deadline returns the 503 at once (no wait started past the deadline)', async () => {
    const srv = await server((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '5' });
      res.end('{}');
    });
    const result = await idempotentFetch(srv.url, { method: 'POST', body: '{}' }, { deadlineMs: 2_000 });
    expect([result.status, result.attempts, result.stoppedBy]).toEqual([503, 1, 'deadline']);
    expect(result.elapsedMs).toBeLessThan(1_000);
  });

  it('a 429 Retry-After of 2^31 s (above the timer limit) with the largest deadline does not fire at once', async () => {
    const srv = await server((_req, res) => {
      res.writeHead(429, { 'content-type': 'application/problem+json', 'retry-after': String(2 ** 31) });
      res.end('{}');
    });
    const result = await idempotentFetch(srv.url, { method: 'POST', body: '{}' }, { deadlineMs: 2 ** 31 - 1 });
    expect([result.status, result.attempts, srv.attempts()]).toEqual([429, 1, 1]);
  });

  it('a 503 Retry-After: 0 (not before now) is bounded by maxAttempts', async () => {
    const srv = await server((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '0' });
      res.end('{}');
    });
    const result = await idempotentFetch(srv.url, { method: 'POST', body: '{}' }, { deadlineMs: 3_000 });
    expect([result.status, srv.attempts()]).toEqual([503, 5]);
  });
});
