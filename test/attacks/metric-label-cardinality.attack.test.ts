import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { DataPoint } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { idempotency, MemoryStore } from '../../src/index.js';
import { ATTR, METRIC } from '../../src/entries/otel.js';
import { serve } from '../helpers/http.js';
import { freshMetricsPerTest } from '../telemetry-harness.js';

/**
 * Black-box attacks on the metrics' label sets (README: `routeName` is a low-cardinality route label): a client
 * choosing a new path, key, method or hostile header per request must not mint a new series per request.
 */

const metricReader = freshMetricsPerTest();

/** The distinct label sets of every library metric, as JSON strings. */
async function labelSets(): Promise<Set<string>> {
  const { scopeMetrics } = await metricReader().read();
  const names = new Set<string>(Object.values(METRIC));
  const sets = scopeMetrics
    .flatMap((scope) => scope.metrics)
    .filter((metric) => names.has(metric.descriptor.name))
    .flatMap((metric) => (metric.dataPoints as DataPoint<unknown>[]).map((point) => `${metric.descriptor.name} ${JSON.stringify(point.attributes)}`));
  return new Set(sets);
}

async function send(url: string, method: string, headers: Record<string, string>) {
  const response = await fetch(url, { method, headers: { 'content-type': 'application/json', ...headers }, body: '{"a":1}' });
  await response.arrayBuffer();
  return response.status;
}

describe('metric labels a client cannot grow', () => {
  it('stay a fixed set across 40 paths, 4 methods, fresh keys, invalid keys and hostile header values', async () => {
    const store = new MemoryStore();
    const routed = new Koa();
    routed.silent = true;
    routed.use(bodyParser());
    const router = new Router();
    const orders = idempotency({ store, scope: (ctx) => ctx.get('x-account') });
    router.post('/orders/:id', orders, (ctx) => void ((ctx.status = 201), (ctx.body = { id: ctx.params.id })));
    router.put('/orders/:id', orders, (ctx) => void (ctx.status = 204));
    router.patch('/orders/:id', orders, (ctx) => void (ctx.status = 204));
    router.delete('/orders/:id', orders, (ctx) => void (ctx.status = 204));
    routed.use(router.routes());
    // Mounted outside any router: every path a client invents (404s) passes through the middleware.
    const global = new Koa();
    global.silent = true;
    global.use(bodyParser());
    global.use(idempotency({ store, scope: (ctx) => ctx.get('x-account') }));
    const servers = [await serve(routed), await serve(global)];
    const [url, unroutedUrl] = servers.map((server) => server.url) as [string, string];
    try {
      const methods = ['POST', 'PUT', 'PATCH', 'DELETE'];
      for (let i = 0; i < 40; i++) {
        const method = methods[i % methods.length]!;
        const hostile = { 'x-account': `acct-${i}`, 'x-forwarded-host': `evil-${i}.example`, host: `h${i}.example`, 'user-agent': `ua-${i}` };
        await send(`${url}/orders/${i}-${Date.now()}?q=${i}`, method, { ...hostile, 'idempotency-key': `key-${i}-${Date.now()}` });
        await send(`${unroutedUrl}/nowhere/${i}/x`, method, { ...hostile, 'idempotency-key': `key-404-${i}-${Date.now()}` });
        await send(`${url}/orders/${i}`, method, { ...hostile, 'idempotency-key': `bad key ${i}` });
      }
      const sets = await labelSets();
      const routes = new Set([...sets].map((set) => JSON.parse(set.slice(set.indexOf(' ') + 1))[ATTR.HTTP_ROUTE] as string | undefined));
      expect([...routes].filter((route) => route !== undefined).sort()).toEqual(['/orders/:id', 'unmatched']);
      // Every metric, route, method and outcome together: bounded by the app's shape, not the 120 requests.
      expect(sets.size).toBeLessThan(60);
    } finally {
      await Promise.all(servers.map((server) => server.close()));
    }
  });
});
