import autocannon from 'autocannon';
import { percentile } from './stats.js';

/** One kind of request the load generator sends; `key` makes a fresh Idempotency-Key (or none). */
export interface RequestShape {
  method: 'POST' | 'GET';
  path: string;
  body?: string;
  /** Called once per request; undefined sends no Idempotency-Key header. */
  key?: () => string;
}

export interface LoadOptions {
  url: string;
  connections: number;
  durationSeconds: number;
  request: RequestShape;
}

export interface LoadResult {
  requests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Responses other than 2xx, plus socket errors and timeouts. */
  failures: number;
  /** Every 2xx latency, ascending, for callers that merge several loads. */
  latenciesMs: number[];
}

/**
 * Runs autocannon against one server. Latencies are taken from autocannon's per-response event in
 * fractional milliseconds: its own histogram has 1 ms resolution, too coarse for sub-millisecond costs.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { request } = options;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const latenciesMs: number[] = [];
  let failures = 0;
  // Without a callback autocannon returns its instance, an EventEmitter that is also a promise of the result.
  const instance = autocannon({
    url: options.url,
    connections: options.connections,
    duration: options.durationSeconds,
    requests: [
      {
        method: request.method,
        path: request.path,
        headers,
        ...(request.body === undefined ? {} : { body: request.body }),
        ...(request.key ? { setupRequest: withKey(request.key) } : {}),
      },
    ],
  }) as unknown as autocannon.Instance & PromiseLike<autocannon.Result>;
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTimeMs: number) => {
    if (statusCode >= 200 && statusCode < 300) latenciesMs.push(responseTimeMs);
    else failures++;
  });
  const result = await instance;
  latenciesMs.sort((a, b) => a - b);
  return {
    requests: latenciesMs.length,
    rps: latenciesMs.length / options.durationSeconds,
    p50Ms: percentile(latenciesMs, 0.5),
    p99Ms: percentile(latenciesMs, 0.99),
    failures: failures + result.errors + result.timeouts,
    latenciesMs,
  };
}

function withKey(nextKey: () => string): (request: autocannon.Request) => autocannon.Request {
  return (request) => ({ ...request, headers: { ...request.headers, 'idempotency-key': nextKey() } });
}
