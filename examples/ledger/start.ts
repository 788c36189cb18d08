import { startTelemetry } from '../shared/otel.js';

/**
 * The ledger service on PORT (default 3001), with its own `service.name` ("ledger"). `npm start` runs
 * it as a child of the payments API (on DOWNSTREAM_PORT); it also runs alone: `tsx examples/ledger/start.ts`.
 * Telemetry starts first: the instrumentations patch Koa and pg as they are imported.
 */
const telemetry = await startTelemetry('ledger');
const { PostgresStore } = await import('../../src/entries/postgres.js');
const { openExampleDatabase } = await import('../shared/database.js');
const { createLedgerApp, ledgerSchemaSql, DEFAULT_LEDGER_SCHEMA } = await import('./app.js');

const port = Number(process.env.PORT ?? 3001);
const database = await openExampleDatabase();
// The sweeper runs every 15 s (one Prometheus scrape), so the dashboard shows it working soon after start.
const store = new PostgresStore({ ...database.storeSource, schema: DEFAULT_LEDGER_SCHEMA, sweepIntervalMs: 15_000 });
for (const statement of ledgerSchemaSql().split(';\n')) await database.sql.query(statement);
await store.migrate();

const server = createLedgerApp({ store, sql: database.sql }).listen(port, () => {
  console.log(`ledger listening on http://localhost:${port}${telemetry.prometheusUrl ? ` (metrics: ${telemetry.prometheusUrl})` : ''}`);
  process.send?.({ ready: true, port });
});

async function shutdown(): Promise<void> {
  server.close();
  await store.close();
  await database.close();
  await telemetry.shutdown();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
// Started by the payments API: stop with it, even if it dies without a signal.
process.once('disconnect', () => void shutdown());
