import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../examples/shared/free-port.js';
import { terminate, until } from '../helpers/child-processes.js';
import { debianPackageUnavailable, firstRunnable, prepareTool } from '../helpers/system-tools.js';

/**
 * A real Prometheus server for the dashboard e2e test: Debian's `prometheus` binary with a temporary
 * config and TSDB, scraping one loopback target every second, listening on a free loopback port.
 * Importing this module installs the binary when it is missing (scripts/install-prometheus.sh).
 */

export const PROMETHEUS = await prepareTool({
  name: 'prometheus',
  script: 'install-prometheus.sh',
  find: () => firstRunnable(['prometheus', '/usr/bin/prometheus'], ['--version']),
  cannotInstall: () => debianPackageUnavailable('prometheus'),
});

export interface PrometheusServer {
  url: string;
  /** An instant query (`/api/v1/query`); throws on an API error. */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** A range query (`/api/v1/query_range`), as a Grafana time series panel runs it; times in epoch seconds. */
  queryRange(expr: string, range: { startS: number; endS: number; stepS: number }): Promise<Array<{ metric: Record<string, string>; values: Array<[number, string]> }>>;
  /** The series matching a selector (`/api/v1/series`), as Grafana's `label_values()` reads them. */
  series(selector: string): Promise<Array<Record<string, string>>>;
  /** Resolves once the target was scraped (successfully) after `afterMs` (epoch ms). */
  scrapedAfter(afterMs: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startPrometheus(options: { job: string; target: string; scrapeIntervalSeconds: number }): Promise<PrometheusServer> {
  if (!PROMETHEUS.binary) throw new Error(`Prometheus cannot be installed: ${PROMETHEUS.skipReason}`);
  const dir = mkdtempSync(join(tmpdir(), 'koa-idempotency-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global:',
      `  scrape_interval: ${options.scrapeIntervalSeconds}s`,
      `  scrape_timeout: ${options.scrapeIntervalSeconds}s`,
      'scrape_configs:',
      `  - job_name: ${JSON.stringify(options.job)}`,
      '    static_configs:',
      `      - targets: [${JSON.stringify(options.target)}]`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    PROMETHEUS.binary,
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
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
    query: async (expr) => (await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>('/api/v1/query', { query: expr })).result,
    queryRange: async (expr, range) =>
      (
        await api<{ result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }> }>('/api/v1/query_range', {
          query: expr,
          start: String(range.startS),
          end: String(range.endS),
          step: String(range.stepS),
        })
      ).result,
    series: (selector) => api<Array<Record<string, string>>>('/api/v1/series', { 'match[]': selector, start: String(Date.now() / 1000 - 600) }),
    scrapedAfter: (afterMs, timeoutMs = 15_000) =>
      until(
        async () => {
          const { activeTargets } = await api<{ activeTargets: Array<{ health: string; lastScrape: string }> }>('/api/v1/targets', {});
          return activeTargets.some((target) => target.health === 'up' && Date.parse(target.lastScrape) > afterMs);
        },
        timeoutMs,
        () => `no successful scrape of ${options.target} after ${new Date(afterMs).toISOString()}`,
      ),
    stop,
  };
}
