import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PROBLEMS, problemType, type ProblemName } from '../../src/index.js';

/**
 * A real HTTP server that answers from a script, for the client tests: each request takes the next step,
 * and the last step repeats once the script is used up. Every request is recorded (headers, body, arrival).
 *
 * - an answer: status, headers, body (an object is sent as JSON);
 * - `'reset'`: the socket is destroyed once the request has arrived (a crash, a proxy cutting it);
 * - `'hang'`: no answer at all, until the client gives up (a partition, a stuck process).
 */
export type Step = { status: number; headers?: Record<string, string>; body?: string | object } | 'reset' | 'hang';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** performance.now() when the request had fully arrived. */
  atMs: number;
}

export interface ScriptedServer {
  url: string;
  server: Server;
  requests: RecordedRequest[];
  /** Replaces the script and forgets the recorded requests. */
  script(steps: Step[]): void;
  close(): Promise<void>;
}

export async function startScriptedServer(initial: Step[] = [{ status: 204 }]): Promise<ScriptedServer> {
  let steps = initial;
  let next = 0;
  const requests: RecordedRequest[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      requests.push({ method: request.method ?? '', path: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString(), atMs: performance.now() });
      const step = steps[Math.min(next++, steps.length - 1)]!;
      if (step === 'reset') return void request.socket.destroy();
      if (step === 'hang') return;
      const body = step.body === undefined ? '' : typeof step.body === 'string' ? step.body : JSON.stringify(step.body);
      const headers = { ...(typeof step.body === 'object' ? { 'content-type': 'application/json' } : {}), ...step.headers };
      response.writeHead(step.status, headers).end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    requests,
    script(replacement) {
      steps = replacement;
      next = 0;
      requests.length = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** An answer as koa-idempotency sends it: RFC 9457 problem+json of one of its problem types. */
export function libraryProblem(name: ProblemName, retryAfter?: string): Step {
  const { status, title } = PROBLEMS[name];
  return {
    status,
    headers: { 'content-type': 'application/problem+json', ...(retryAfter === undefined ? {} : { 'retry-after': retryAfter }) },
    body: JSON.stringify({ type: problemType(name), title, status, detail: `scripted ${name}` }),
  };
}

/** A plain "not now" answer: 503 or 429, with an optional Retry-After. */
export function notNow(status: 429 | 502 | 503 | 504, retryAfter?: string): Step {
  return { status, headers: retryAfter === undefined ? {} : { 'retry-after': retryAfter }, body: 'try later' };
}
