import pg from 'pg';
import { PostgresStore } from '../../src/entries/postgres.js';
import { DATABASE_URL, uniqueSchema } from './databases.js';

/** A schema of a test's own on the Postgres server: the records table migrated, and a `charges` table. */
export interface ChargesTable {
  schema: string;
  /** The quoted, qualified name of the `charges` table. */
  charges: string;
  /** A pool of the test's own, for setting up and checking (never the store's under test). */
  admin: pg.Pool;
  close(): Promise<void>;
}

export async function openChargesTable(prefix: string, columns = 'key text NOT NULL'): Promise<ChargesTable> {
  const schema = uniqueSchema(prefix);
  const charges = `"${schema}".charges`;
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
  await admin.query(`CREATE SCHEMA "${schema}"`);
  await admin.query(`CREATE TABLE ${charges} (${columns})`);
  const store = new PostgresStore({ pool: admin, schema });
  await store.migrate();
  await store.close();
  return {
    schema,
    charges,
    admin,
    async close() {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    },
  };
}

export interface KeyedResponse {
  /** -1 when no response came (a transport failure, or none within the timeout). */
  status: number;
  type: string | null;
  replayed: string | null;
  text: string;
}

/** POSTs `{"a":1}` under `key`, with `x-mode` for handlers that act on it; never throws (see `status`). */
export async function postKeyed(url: string, key: string, mode = '', timeoutMs = 9_000): Promise<KeyedResponse> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-mode': mode },
      body: '{"a":1}',
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { status: response.status, type: response.headers.get('content-type'), replayed: response.headers.get('idempotent-replayed'), text: await response.text() };
  } catch (error) {
    return { status: -1, type: null, replayed: null, text: String(error) };
  }
}
