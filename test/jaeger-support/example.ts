import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from '../../examples/shared/free-port.js';

/** Starting the Postgres server and both services, under the TypeScript loader, on 2 busy cores. */
export const EXAMPLE_START_TIMEOUT_MS = 120_000;

export interface RunningExample {
  baseUrl: string;
  /** Everything both services printed (for the error when something fails). */
  output(): string;
  /** SIGTERM (the example flushes its spans and stops its Postgres server), SIGKILL after 15 s; resolves on exit. */
  stop(): Promise<void>;
}

/**
 * `npm start` as a user runs it (the payments API, which forks the ledger and starts its own Postgres server),
 * every listener on a free loopback port, traces exported by OTLP/HTTP to `otlpUrl` every 100 ms.
 */
export async function startExample(otlpUrl: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<RunningExample> {
  const [payments, ledger, paymentsMetrics, ledgerMetrics] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(payments),
    DOWNSTREAM_PORT: String(ledger),
    OTEL_EXPORTER_PROMETHEUS_PORT: String(paymentsMetrics),
    DOWNSTREAM_PROMETHEUS_PORT: String(ledgerMetrics),
    // Traces only, as the compose file does: Jaeger takes no OTLP metrics.
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otlpUrl}/v1/traces`,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    ...extraEnv,
  };
  delete env.DATABASE_URL; // the example starts a Postgres server of its own, as on a fresh clone
  delete env.PGLITE_DIR;
  delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/payments/start.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const stop = () => terminate(child);
  const deadline = Date.now() + EXAMPLE_START_TIMEOUT_MS;
  while (!output.includes('payments API listening')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`the payments example did not start:\n${output.slice(-4000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { baseUrl: `http://127.0.0.1:${payments}`, output: () => output, stop };
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}
