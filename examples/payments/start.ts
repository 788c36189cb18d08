import { PostgresStore } from '../../src/index.js';
import { openExampleDatabase } from '../shared/database.js';
import { createPaymentsApp, paymentsSchemaSql } from './app.js';

/**
 * `npm start`: the payments API on PORT (default 3000), on the Postgres server at DATABASE_URL or on an
 * embedded PGlite when it is unset.
 */
const port = Number(process.env.PORT ?? 3000);
const database = await openExampleDatabase();
const store = new PostgresStore({ ...database.storeSource, sweepIntervalMs: 60_000 });
await store.migrate();
for (const statement of paymentsSchemaSql().split(';\n')) await database.sql.query(statement);

const app = createPaymentsApp({ store, sql: database.sql });
const server = app.listen(port, () => {
  console.log(`payments API listening on http://localhost:${port} (database: ${database.kind === 'postgres' ? 'Postgres server' : 'embedded PGlite'})`);
  console.log(
    `try: curl -i -X POST http://localhost:${port}/payments -H 'Authorization: Bearer acct_1' -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' -d '{"amount":1000,"currency":"EUR"}'`,
  );
});

async function shutdown(): Promise<void> {
  server.close();
  await store.close();
  await database.close();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
