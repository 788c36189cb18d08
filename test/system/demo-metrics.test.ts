import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';
import { BUNDLED_DASHBOARDS } from '../../dashboards/src/dashboards.js';
import { promQueries, substitute, variableQueries } from '../../dashboards/src/panel-queries.js';
import { VAR } from '../../dashboards/src/variables.js';
import { analyse, nameMatches, type PromqlAnalysis } from '../dashboards-support/promql.js';
import { exampleEnvironment } from '../helpers/example-environment.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The promise: after `npm start` and `npm run demo:traffic`, every panel has data within this. */
const ALL_METRICS_WITHIN_MS = 75_000;
/** How often the served metrics are read while they are not all there yet. */
const POLL_INTERVAL_MS = 25;
/** How long the example may take to stop its ledger and its Postgres server after SIGTERM. */
const STOP_TIMEOUT_MS = 30_000;
/** Grafana's macros and the dashboards' variables: any value will do, only the metric names are read. */
const MACROS = { __rate_interval: '1m', __range: '1h', [VAR.SERVICE]: '.*', [VAR.ROUTE]: '.*' };

type MetricName = PromqlAnalysis['selectors'][number]['name'];

/**
 * The metric names of every query of the committed dashboards that read escaped names (those the JS exporter
 * serves), in panels and in `label_values()` variables: one list per query, any of which fills it (a query reads
 * a classic histogram's `_count` or else a native histogram).
 */
function dashboardMetricNames(): MetricName[][] {
  const dashboards = BUNDLED_DASHBOARDS.filter(({ naming }) => naming === 'escaped').map(
    ({ file }) => JSON.parse(readFileSync(new URL(`../../dashboards/${file}`, import.meta.url), 'utf8')) as Dashboard,
  );
  const exprs = dashboards.flatMap((dashboard) => [
    ...promQueries(dashboard).map((query) => query.expr),
    ...variableQueries(dashboard).map((variable) => variable.selector),
  ]);
  const queries = exprs.map((expr) => analyse(substitute(expr, MACROS)).selectors.map((selector) => selector.name));
  return [...new Map(queries.map((names) => [JSON.stringify(names), names])).values()];
}

/**
 * The demo as a user runs it: `npm start` (no DATABASE_URL, so it starts its own Postgres server), then
 * `npm run demo:traffic`, then every metric the bundled dashboards query must be served. The dashboards'
 * service variable is "All" by default (every job reporting requests: payments and its ledger), so a panel
 * has data when either service serves its metric.
 */
describe('npm start + npm run demo:traffic', () => {
  it(
    `serves every metric the bundled dashboards query within ${ALL_METRICS_WITHIN_MS / 1000} s`,
    async () => {
      const wanted = dashboardMetricNames();
      expect(wanted.length).toBeGreaterThan(0);
      const { env, ports } = await exampleEnvironment();
      const metricsUrls = [ports.paymentsMetrics, ports.ledgerMetrics].map((metrics) => `http://127.0.0.1:${metrics}/metrics`);

      const startedMs = performance.now();
      const example = spawn('npm', ['start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const output: string[] = [];
      try {
        const url = await listening(example, output, ALL_METRICS_WITHIN_MS);
        await demoTraffic(url, env);

        let missing = wanted;
        while (performance.now() - startedMs < ALL_METRICS_WITHIN_MS) {
          const served = (await Promise.all(metricsUrls.map(sampleNames))).flat();
          missing = wanted.filter((names) => !names.some((name) => served.some((sample) => nameMatches(name, sample))));
          if (missing.length === 0) break;
          await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
        }
        const elapsedSeconds = ((performance.now() - startedMs) / 1000).toFixed(1);
        expect(
          missing.map((names) => names.map((name) => ('exact' in name ? name.exact : name.regex)).join(' or ')),
          `not in ${metricsUrls.join(' or ')} after ${elapsedSeconds} s`,
        ).toEqual([]);
        console.log(`every metric the dashboards query was served ${elapsedSeconds} s after npm start`);
      } catch (error) {
        throw new Error(`${(error as Error).message}\n--- npm start printed (last 20 lines):\n${output.slice(-20).join('\n')}`, { cause: error });
      } finally {
        await stopGroup(example);
      }
    },
    ALL_METRICS_WITHIN_MS + STOP_TIMEOUT_MS + 15_000,
  );
});

/** Resolves with the payments API's URL from its "listening" line; keeps every line in `output`. */
function listening(child: ChildProcess, output: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => output.push(line));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      const match = /payments API listening on (http:\/\/\S+)/.exec(line);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`npm start exited (code ${code}) before listening`)));
    setTimeout(() => reject(new Error(`npm start did not print its URL within ${timeoutMs / 1000} s`)), timeoutMs).unref();
  });
}

/** `npm run demo:traffic` against the example; its outcome table is the error when a scenario misbehaved. */
async function demoTraffic(url: string, env: NodeJS.ProcessEnv): Promise<void> {
  try {
    await promisify(execFile)('npm', ['run', '--silent', 'demo:traffic', '--', '--url', url], { cwd: ROOT, env });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`npm run demo:traffic failed: ${(error as Error).message}\n${stdout ?? ''}${stderr ?? ''}`, { cause: error });
  }
}

/** The sample names a Prometheus endpoint serves; none while it is not up yet. */
async function sampleNames(url: string): Promise<string[]> {
  const text = await fetch(url, { signal: AbortSignal.timeout(POLL_INTERVAL_MS * 5) }).then(
    (response) => (response.ok ? response.text() : ''),
    () => '',
  );
  return [...text.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/gm)].map((match) => match[1]!);
}

/** SIGTERM to the whole process group (npm, tsx, the example, its ledger, its Postgres server); waits until every one has exited. */
async function stopGroup(child: ChildProcess): Promise<void> {
  const groupAlive = () => {
    try {
      process.kill(-child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (groupAlive()) process.kill(-child.pid!, 'SIGTERM');
  const deadlineMs = performance.now() + STOP_TIMEOUT_MS;
  while (groupAlive() && performance.now() < deadlineMs) await new Promise((resolve) => setTimeout(resolve, 20));
  if (groupAlive()) {
    process.kill(-child.pid!, 'SIGKILL');
    throw new Error(`npm start did not stop within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM`);
  }
}
