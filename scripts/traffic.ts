/**
 * `npm run demo:traffic`: realistic retrying-client traffic against a running payments example, so
 * Jaeger and Grafana have something to show: client timeouts followed by retries, concurrent
 * duplicates, payload mismatches, two tenants using the same key, and plain replays. The retries are made
 * with the library's `idempotentFetch`, as a real service client makes them (same key, backoff with full
 * jitter, Retry-After honoured), and every attempt is counted. Bounded in scenarios and time, loopback
 * only; progress on stderr, an outcome table (or `--json`) on stdout.
 *
 * Exit codes: 0 every scenario behaved as expected, 1 some did not, 2 usage error, 3 server unreachable.
 */
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { buildReport, formatReport, type TrafficReport } from './traffic/report.js';
import { runScenario, SCENARIOS, TENANTS, type ScenarioRun } from './traffic/scenarios.js';

export const DEFAULT_URL = 'http://localhost:3000';
export const DEFAULT_SCENARIOS = 60;
export const DEFAULT_DURATION_SECONDS = 60;
export const DEFAULT_CONCURRENCY = 4;
/** Short enough that the client usually gives up while the payment is still being processed. */
export const DEFAULT_CLIENT_TIMEOUT_MS = 10;
const PREFLIGHT_TIMEOUT_MS = 3_000;
const PROGRESS_INTERVAL_MS = 250;

export interface TrafficOptions {
  /** Base URL of the payments example (loopback only). @default PAYMENTS_URL, else http://localhost:3000 */
  url: string;
  /** Scenarios to run, spread evenly over the kinds. @default 60 */
  scenarios?: number;
  /** No new scenario starts after this. @default 60 */
  durationSeconds?: number;
  /** Scenarios in flight at once. @default 4 */
  concurrency?: number;
  /** Client timeout of the first attempt in 'timeout-then-retry'. @default 10 */
  clientTimeoutMs?: number;
  /** Called after each finished scenario. */
  onProgress?: (done: number, total: number, runs: readonly ScenarioRun[]) => void;
}

export class TrafficError extends Error {
  override name = 'TrafficError';
  constructor(
    message: string,
    readonly exitCode: 2 | 3,
  ) {
    super(message);
  }
}

/** Runs the scenarios and returns the report and the raw runs. */
export async function runTraffic(options: TrafficOptions): Promise<{ report: TrafficReport; runs: ScenarioRun[] }> {
  const baseUrl = loopbackUrl(options.url);
  const total = options.scenarios ?? DEFAULT_SCENARIOS;
  const deadlineMs = performance.now() + (options.durationSeconds ?? DEFAULT_DURATION_SECONDS) * 1_000;
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  await preflight(baseUrl);

  const runId = `traffic-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const startedMs = performance.now();
  const runs: ScenarioRun[] = [];
  let next = 0;
  const worker = async () => {
    while (next < total && performance.now() < deadlineMs) {
      const index = next++;
      const run = await runScenario(SCENARIOS[index % SCENARIOS.length]!, {
        baseUrl,
        keyPrefix: `${runId}-${index}`,
        tenant: TENANTS[index % TENANTS.length]!,
        otherTenant: TENANTS[(index + 1) % TENANTS.length]!,
        clientTimeoutMs: options.clientTimeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS,
        random: Math.random,
      });
      runs.push(run);
      options.onProgress?.(runs.length, total, runs);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  return { report: buildReport(baseUrl, runs, performance.now() - startedMs), runs };
}

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Whether stderr is a terminal (progress rewrites one line) or a log (a line now and then). */
  interactive: boolean;
}

/** The command line: parses flags, runs, prints. Returns the exit code. */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  let options: TrafficOptions & { json: boolean };
  try {
    const parsed = parseArgs({ args: [...argv], options: FLAGS, strict: true, allowPositionals: false });
    if (parsed.values.help) {
      io.stdout(USAGE);
      return 0;
    }
    options = {
      url: parsed.values.url ?? env.PAYMENTS_URL ?? DEFAULT_URL,
      scenarios: positiveInteger(parsed.values.count, 'count'),
      durationSeconds: positiveInteger(parsed.values['duration-seconds'], 'duration-seconds'),
      concurrency: positiveInteger(parsed.values.concurrency, 'concurrency'),
      clientTimeoutMs: positiveInteger(parsed.values['timeout-ms'], 'timeout-ms'),
      json: parsed.values.json ?? false,
    };
  } catch (error) {
    io.stderr(`demo:traffic: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }

  const progress = progressPrinter(io);
  try {
    const { report, runs } = await runTraffic({ ...options, onProgress: progress.update });
    progress.end();
    io.stdout(options.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report, runs));
    return report.unexpected.length === 0 ? 0 : 1;
  } catch (error) {
    progress.end();
    if (!(error instanceof TrafficError)) throw error;
    io.stderr(`demo:traffic: ${error.message}\n`);
    return error.exitCode;
  }
}

const FLAGS = {
  url: { type: 'string' },
  count: { type: 'string' },
  'duration-seconds': { type: 'string' },
  concurrency: { type: 'string' },
  'timeout-ms': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const USAGE = `Usage: npm run demo:traffic -- [flags]

Sends retrying-client traffic to a running payments example (npm start): ${SCENARIOS.join(', ')}.

Flags:
  --url URL                payments example base URL, loopback only (default: PAYMENTS_URL, else ${DEFAULT_URL})
  --count N                scenarios to run (default: ${DEFAULT_SCENARIOS})
  --duration-seconds N     start no scenario after N seconds (default: ${DEFAULT_DURATION_SECONDS})
  --concurrency N          scenarios in flight at once (default: ${DEFAULT_CONCURRENCY})
  --timeout-ms N           client timeout before the retry in timeout-then-retry (default: ${DEFAULT_CLIENT_TIMEOUT_MS})
  --json                   print the report as JSON
  -h, --help               show this help

Exit codes: 0 every scenario behaved as expected, 1 some did not, 2 usage error, 3 server unreachable.
`;

function positiveInteger(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw new Error(`--${flag} must be a positive integer; got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** Load goes to this machine only: a demo must never become a load test against someone else's server. */
function loopbackUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TrafficError(`--url must be an http URL; got ${JSON.stringify(raw)}`, 2);
  }
  const loopback = url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(url.hostname);
  if (url.protocol !== 'http:' || !loopback) {
    throw new TrafficError(`--url must be an http URL on this machine (localhost, 127.0.0.1 or [::1]); got ${url.origin}`, 2);
  }
  return url.origin;
}

async function preflight(baseUrl: string): Promise<void> {
  try {
    await fetch(new URL('/payments', baseUrl), { headers: { authorization: `Bearer ${TENANTS[0]}` }, signal: AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS) }).then((r) =>
      r.arrayBuffer(),
    );
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
    throw new TrafficError(`cannot reach the payments example at ${baseUrl} (${cause}). Start it with \`npm start\`, or pass --url.`, 3);
  }
}

function progressPrinter(io: Io) {
  let lastMs = 0;
  let printed = false;
  const line = (done: number, total: number, runs: readonly ScenarioRun[]) => {
    let requests = 0;
    let unexpected = 0;
    for (const run of runs) {
      requests += run.exchanges.length;
      if (run.problems.length > 0) unexpected++;
    }
    return `[${String(done).padStart(String(total).length)}/${total} scenarios] ${requests} requests, ${unexpected} unexpected`;
  };
  return {
    update: (done: number, total: number, runs: readonly ScenarioRun[]) => {
      const now = performance.now();
      const finished = done === total;
      if (io.interactive) {
        if (now - lastMs < PROGRESS_INTERVAL_MS && !finished) return;
        io.stderr(`\r${line(done, total, runs)}`);
        printed = true;
      } else if (finished || done % Math.max(1, Math.ceil(total / 10)) === 0) {
        io.stderr(`${line(done, total, runs)}\n`);
      }
      lastMs = now;
    },
    end: () => {
      if (printed) io.stderr('\n');
      printed = false;
    },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2), process.env, {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    interactive: process.stderr.isTTY === true,
  });
}
