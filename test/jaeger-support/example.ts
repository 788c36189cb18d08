import { spawn } from 'node:child_process';
import { terminate } from '../helpers/child-processes.js';
import { exampleEnvironment } from '../helpers/example-environment.js';

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
  const { env, ports } = await exampleEnvironment({
    // Traces only, as the compose file does: Jaeger takes no OTLP metrics.
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otlpUrl}/v1/traces`,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    ...extraEnv,
  });
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/payments/start.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const stop = () => terminate(child, 15_000);
  // Started when it prints its line; an exit or the deadline ends the wait.
  const listening = new Promise<void>((resolve, reject) => {
    const onOutput = () => output.includes('payments API listening') && resolve();
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
    setTimeout(() => reject(new Error(`not within ${EXAMPLE_START_TIMEOUT_MS} ms`)), EXAMPLE_START_TIMEOUT_MS).unref();
  });
  try {
    await listening;
  } catch (error) {
    await stop();
    throw new Error(`the payments example did not start (${String(error)}):\n${output.slice(-4000)}`, { cause: error });
  }
  return { baseUrl: `http://127.0.0.1:${ports.payments}`, output: () => output, stop };
}
