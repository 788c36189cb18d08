import { freePort } from '../../examples/shared/free-port.js';

export interface ExamplePorts {
  payments: number;
  ledger: number;
  paymentsMetrics: number;
  ledgerMetrics: number;
}

/**
 * The environment `npm start` gets in a test: a fresh clone's (no DATABASE_URL or PGLITE_DIR, so the example
 * starts its own Postgres server; no OTLP export unless `extra` names a per-signal endpoint), with its four
 * listeners on free ports so it can run beside anything else.
 */
export async function exampleEnvironment(extra: NodeJS.ProcessEnv = {}): Promise<{ env: NodeJS.ProcessEnv; ports: ExamplePorts }> {
  const [payments, ledger, paymentsMetrics, ledgerMetrics] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(payments),
    DOWNSTREAM_PORT: String(ledger),
    OTEL_EXPORTER_PROMETHEUS_PORT: String(paymentsMetrics),
    DOWNSTREAM_PROMETHEUS_PORT: String(ledgerMetrics),
    ...extra,
  };
  delete env.DATABASE_URL;
  delete env.PGLITE_DIR;
  delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
  return { env, ports: { payments, ledger, paymentsMetrics, ledgerMetrics } };
}
