import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../examples/shared/free-port.js';
import { terminate, until } from '../helpers/child-processes.js';
import { firstRunnable, prepareTool } from '../helpers/system-tools.js';

/**
 * A real Prometheus 3 server for the dashboard tests: the binary scripts/install-prometheus.sh builds, with a
 * temporary config and TSDB, listening on a free loopback port; it scrapes one loopback target every second, or
 * receives OTLP. Importing this module builds the binary when it is missing (minutes, once per machine).
 */

/** The release scripts/install-prometheus.sh builds (`3.16.0`): one place, which examples/compose's pin is checked against. */
const INSTALLER = readFileSync(new URL('../../scripts/install-prometheus.sh', import.meta.url), 'utf8');
export const PROMETHEUS_RELEASE = /^RELEASE_VERSION='([\d.]+)'$/m.exec(INSTALLER)![1]!;
const MODULE_VERSION = /^MODULE_VERSION='(v[\d.]+)'$/m.exec(INSTALLER)![1]!;

export const PROMETHEUS = await prepareTool({
  name: 'prometheus',
  script: 'install-prometheus.sh',
  find: findBinary,
  cannotInstall: () =>
    firstRunnable(['go', '/usr/local/go/bin/go'], ['version']) ? undefined : 'no Go toolchain to build the Prometheus binary from source (or set PROMETHEUS_BINARY)',
});

/** Where scripts/install-prometheus.sh caches the binary, or PROMETHEUS_BINARY. */
function findBinary(): string | undefined {
  const cacheHome = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const candidate = process.env.PROMETHEUS_BINARY || join(cacheHome, 'koa-idempotency', `prometheus-${MODULE_VERSION}`, 'prometheus');
  try {
    accessSync(candidate, constants.X_OK);
    return candidate;
  } catch {
    return undefined;
  }
}

/**
 * What the server ingests: a scrape of `target` every `scrapeIntervalSeconds` (classic histograms as exposed, or
 * `nhcb`: converted to native histograms with custom buckets), or OTLP pushed to its receiver, names translated
 * with `translationStrategy`.
 */
export type PrometheusSource =
  | { scrape: { job: string; target: string; scrapeIntervalSeconds: number; histograms: 'classic' | 'nhcb' } }
  | { otlp: { translationStrategy: 'UnderscoreEscapingWithSuffixes' | 'NoTranslation' } };

function configOf(source: PrometheusSource): string[] {
  if ('otlp' in source) return ['otlp:', `  translation_strategy: ${source.otlp.translationStrategy}`];
  const { job, target, scrapeIntervalSeconds, histograms } = source.scrape;
  return [
    'global:',
    `  scrape_interval: ${scrapeIntervalSeconds * 1000}ms`,
    `  scrape_timeout: ${scrapeIntervalSeconds * 1000}ms`,
    // The text format the JS exporter serves has classic buckets only: with these, Prometheus stores each
    // histogram as one native histogram with custom buckets (NHCB) instead of `_bucket` series.
    ...(histograms === 'nhcb' ? ['  scrape_native_histograms: true', '  convert_classic_histograms_to_nhcb: true'] : []),
    'scrape_configs:',
    `  - job_name: ${JSON.stringify(job)}`,
    '    static_configs:',
    `      - targets: [${JSON.stringify(target)}]`,
  ];
}

export interface PrometheusServer {
  url: string;
  /** OTLP/HTTP metrics endpoint of the receiver (when started with `otlp`). */
  otlpMetricsUrl: string;
  /** An instant query (`/api/v1/query`), at `timeS` (epoch seconds) or now; throws on an API error. */
  query(expr: string, timeS?: number): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** A range query (`/api/v1/query_range`), as a Grafana time series panel runs it; times in epoch seconds. */
  queryRange(expr: string, range: { startS: number; endS: number; stepS: number }): Promise<Array<{ metric: Record<string, string>; values: Array<[number, string]> }>>;
  /** When the first series matching `selector` was sampled over the minute up to now (epoch seconds, ascending). */
  sampleTimes(selector: string): Promise<number[]>;
  /** The series matching a selector (`/api/v1/series`), as Grafana's `label_values()` reads them. */
  series(selector: string): Promise<Array<Record<string, string>>>;
  /** Resolves once the scrape target was scraped (successfully) after `afterMs` (epoch ms). */
  scrapedAfter(afterMs: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startPrometheus(source: PrometheusSource): Promise<PrometheusServer> {
  if (!PROMETHEUS.binary) throw new Error(`Prometheus cannot be installed: ${PROMETHEUS.skipReason}`);
  const dir = mkdtempSync(join(tmpdir(), 'koa-idempotency-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, [...configOf(source), ''].join('\n'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    PROMETHEUS.binary,
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
      ...('otlp' in source ? ['--web.enable-otlp-receiver'] : []),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const stop = async () => {
    await terminate(child, 5_000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await until(
      async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok === true,
      30_000,
      () => `Prometheus did not become ready: ${stderr}`,
    );
  } catch (error) {
    await stop();
    throw error;
  }

  async function api<T>(path: string, params: Record<string, string>): Promise<T> {
    const response = await fetch(`${url}${path}?${new URLSearchParams(params).toString()}`);
    const body = (await response.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`Prometheus ${path} ${JSON.stringify(params)}: ${body.error}`);
    return body.data;
  }

  return {
    url,
    otlpMetricsUrl: `${url}/api/v1/otlp/v1/metrics`,
    query: async (expr, timeS) =>
      (
        await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>('/api/v1/query', {
          query: expr,
          ...(timeS === undefined ? {} : { time: String(timeS) }),
        })
      ).result,
    queryRange: async (expr, range) =>
      (
        await api<{ result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }> }>('/api/v1/query_range', {
          query: expr,
          start: String(range.startS),
          end: String(range.endS),
          step: String(range.stepS),
        })
      ).result,
    sampleTimes: async (selector) =>
      (await api<{ result: Array<{ values: Array<[number, string]> }> }>('/api/v1/query', { query: `${selector}[1m]` })).result[0]?.values.map(([timeS]) => timeS) ?? [],
    series: (selector) => api<Array<Record<string, string>>>('/api/v1/series', { 'match[]': selector, start: String(Date.now() / 1000 - 600) }),
    scrapedAfter: (afterMs, timeoutMs = 15_000) =>
      until(
        async () => {
          const { activeTargets } = await api<{ activeTargets: Array<{ health: string; lastScrape: string }> }>('/api/v1/targets', {});
          return activeTargets.some((target) => target.health === 'up' && Date.parse(target.lastScrape) > afterMs);
        },
        timeoutMs,
        () => `no successful scrape after ${new Date(afterMs).toISOString()}`,
      ),
    stop,
  };
}
