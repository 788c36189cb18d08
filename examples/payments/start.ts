import { startTelemetry } from '../shared/otel.js';
import { startLedger } from './ledger-process.js';

/**
 * `npm start`: the payments API on PORT (default 3000), on the Postgres server at DATABASE_URL or on an
 * embedded PGlite when it is unset, and its downstream ledger service on DOWNSTREAM_PORT (default
 * PORT + 1), started as a child process unless DOWNSTREAM_URL points at a running one.
 * Telemetry starts first: the instrumentations patch Koa and pg as they are imported.
 */
const telemetry = await startTelemetry('payments');
const { PostgresStore } = await import('../../src/index.js');
const { openExampleDatabase } = await import('../shared/database.js');
const { createPaymentsApp, paymentsSchemaSql } = await import('./app.js');

const port = Number(process.env.PORT ?? 3000);
const ledger = startLedger(port, process.env);
const database = await openExampleDatabase();
const store = new PostgresStore({ ...database.storeSource, sweepIntervalMs: 60_000 });
await store.migrate();
for (const statement of paymentsSchemaSql().split(';\n')) await database.sql.query(statement);
const ledgerUrl = await ledger.ready;

const app = createPaymentsApp({ store, sql: database.sql, ledgerUrl });
const server = app.listen(port, () => {
  console.log(`payments API listening on http://localhost:${port} (database: ${database.kind === 'postgres' ? 'Postgres server' : 'embedded PGlite'})`);
  console.log(`ledger (downstream) at ${ledgerUrl}; metrics: ${telemetry.prometheusUrl ?? 'not served'}; OTLP export: ${telemetry.otlp ? 'on' : 'off (set OTEL_EXPORTER_OTLP_ENDPOINT)'}`);
  console.log(
    `try: curl -i -X POST http://localhost:${port}/payments -H 'Authorization: Bearer acct_1' -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' -d '{"amount":1000,"currency":"EUR"}'`,
  );
});

async function shutdown(): Promise<void> {
  server.close();
  await ledger.stop();
  await store.close();
  await database.close();
  await telemetry.shutdown();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
