import { EventEmitter, once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { metrics } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, type MetricReader } from '@opentelemetry/sdk-metrics';
import { idempotency, type IdempotencyStore } from '../../src/index.js';
import { resetInstruments } from '../../src/telemetry/metrics.js';
import { postJson } from '../helpers/http.js';

/**
 * The app and traffic behind the dashboard e2e test: the library's middleware on three routes, its
 * metrics served by the JS PrometheusExporter, and a traffic mix that makes every overview panel move.
 */

export const ROUTES = {
  /** Lease mode, duplicates rejected while in progress (409). */
  ORDERS: '/orders',
  /** Duplicates wait for the first request and get its response. */
  TRANSFERS: '/transfers',
  /** Records expire after a second, so the sweeper has work. */
  SESSIONS: '/sessions',
} as const;

const MAX_DELAY_MS = 5_000;

/** Emits each request's Idempotency-Key as its handler starts: a duplicate is sent once its first runs. */
const handlerStarts = new EventEmitter();

export function createTrafficApp(store: IdempotencyStore): Koa {
  const router = new Router();
  const handler = async (ctx: Koa.Context) => {
    handlerStarts.emit(ctx.get('idempotency-key'));
    const { delayMs = 0 } = (ctx.request.body ?? {}) as { delayMs?: number };
    // A slow handler: the durations, the in-flight gauge and the waits it causes are what the panels show.
    await sleep(Math.min(Math.max(Number(delayMs) || 0, 0), MAX_DELAY_MS));
    ctx.status = 201;
    ctx.body = { ok: true, at: Date.now() };
  };
  router.post(ROUTES.ORDERS, idempotency({ store, required: true }), handler);
  router.post(ROUTES.TRANSFERS, idempotency({ store, onInProgress: 'wait', waitMs: 5_000 }), handler);
  router.post(ROUTES.SESSIONS, idempotency({ store, ttlSeconds: 1, leaseMs: 500 }), handler); // the TTL must outlast the lease
  const app = new Koa();
  app.use(bodyParser({ enableTypes: ['json'] }));
  app.use(router.routes());
  return app;
}

/**
 * An SDK MeterProvider, registered globally, whose metrics are served at `<url>/metrics` on a loopback port, and
 * read by `pushers` too (OTLP exporters); `flush()` makes every pusher export now.
 */
export async function serveMetrics(serviceName: string, pushers: MetricReader[] = []): Promise<{ target: string; flush(): Promise<void>; close(): Promise<void> }> {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({ readers: [exporter, ...pushers], resource: resourceFromAttributes({ 'service.name': serviceName }) });
  metrics.setGlobalMeterProvider(provider);
  resetInstruments();
  const server: Server = createServer((request, response) => exporter.getMetricsRequestHandler(request, response));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    target: `127.0.0.1:${port}`,
    flush: () => provider.forceFlush(),
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await provider.shutdown();
      metrics.disable();
      resetInstruments();
    },
  };
}

/** Status codes seen, by kind of request, so the test can check the traffic did what it meant to. */
export type TrafficLog = Record<string, number[]>;

/**
 * One round of mixed traffic: executions, replays, a mismatch, a missing key, a conflict (a duplicate
 * of a slow request), a waiting duplicate, and short-lived records for the sweeper. Keys are unique per
 * round, so every round adds to every series.
 */
export async function sendMixedTraffic(url: string, round: number, log: TrafficLog): Promise<void> {
  const record = (kind: string, ...statuses: number[]) => (log[kind] ??= []).push(...statuses);
  const key = (name: string) => `e2e-${round}-${name}`;
  const orders = `${url}${ROUTES.ORDERS}`;

  for (let i = 0; i < 3; i++) record('execute', (await postJson(orders, { item: i }, { key: key(`order-${i}`) })).status);
  for (let i = 0; i < 3; i++) record('replay', (await postJson(orders, { item: i }, { key: key(`order-${i}`) })).status);
  record('mismatch', (await postJson(orders, { item: 'other' }, { key: key('order-0') })).status);
  record('missing key', (await postJson(orders, { item: 0 })).status);

  // Whichever of a pair claims the key first runs; the other is the duplicate (409 here, a wait below).
  record('slow + conflict', ...(await duplicatePair(orders, key('slow'))));
  record('slow + wait', ...(await duplicatePair(`${url}${ROUTES.TRANSFERS}`, key('transfer'))));

  for (const [i, sessionKey] of shortLivedKeys(round).entries()) record('short-lived', (await postJson(`${url}${ROUTES.SESSIONS}`, { i }, { key: sessionKey })).status);
}

/** The keys of a round's records that expire after a second, for the sweeper. */
export function shortLivedKeys(round: number): string[] {
  return [0, 1].map((i) => `e2e-${round}-session-${i}`);
}

/** A slow request and, while it runs, a duplicate of it; their statuses in ascending order. */
async function duplicatePair(url: string, key: string): Promise<number[]> {
  const running = once(handlerStarts, key);
  const first = postJson(url, { delayMs: 600 }, { key });
  await Promise.race([running, first]); // a first request that fails before its handler must not hang the traffic
  const second = postJson(url, { delayMs: 600 }, { key });
  return (await Promise.all([first, second])).map((response) => response.status).sort((a, b) => a - b);
}

/** A request that holds its claim for `holdMs`, so the in-flight gauge is 1 while it runs. */
export function holdClaim(url: string, round: number, holdMs: number) {
  return postJson(`${url}${ROUTES.ORDERS}`, { delayMs: holdMs }, { key: `e2e-${round}-held` });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
