import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PROMETHEUS_PORT } from '../shared/otel.js';

/** How long the ledger may take to start (PGlite's first start is the slow part). */
const LEDGER_START_TIMEOUT_MS = 60_000;

export interface LedgerProcess {
  /** The ledger's base URL once it accepts requests. */
  ready: Promise<string>;
  stop(): Promise<void>;
}

/**
 * The payments API's downstream ledger: DOWNSTREAM_URL when set (e.g. another container), else a child
 * process on DOWNSTREAM_PORT (default PORT + 1, so several copies can run side by side) with its own
 * Prometheus port (DOWNSTREAM_PROMETHEUS_PORT, default the payments' port + 1) and its own PGlite.
 */
export function startLedger(paymentsPort: number, env: NodeJS.ProcessEnv): LedgerProcess {
  if (env.DOWNSTREAM_URL) return { ready: Promise.resolve(env.DOWNSTREAM_URL), stop: async () => undefined };
  const port = Number(env.DOWNSTREAM_PORT ?? paymentsPort + 1);
  const prometheusPort = Number(env.DOWNSTREAM_PROMETHEUS_PORT ?? Number(env.OTEL_EXPORTER_PROMETHEUS_PORT ?? DEFAULT_PROMETHEUS_PORT) + 1);
  const child = fork(fileURLToPath(new URL('../ledger/start.ts', import.meta.url)), {
    // fork() reuses this process's execArgv, so the child runs under the same TypeScript loader (tsx).
    env: {
      ...env,
      PORT: String(port),
      OTEL_EXPORTER_PROMETHEUS_PORT: String(prometheusPort),
      ...(env.PGLITE_DIR ? { PGLITE_DIR: `${env.PGLITE_DIR}-ledger` } : {}),
    },
  });
  return { ready: whenReady(child, port), stop: () => stopChild(child) };
}

function whenReady(child: ChildProcess, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the ledger did not start within ${LEDGER_START_TIMEOUT_MS} ms`)), LEDGER_START_TIMEOUT_MS);
    child.once('message', () => {
      clearTimeout(timer);
      resolve(`http://127.0.0.1:${port}`);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the ledger exited with code ${code} before it was ready (is port ${port} free? set DOWNSTREAM_PORT)`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
