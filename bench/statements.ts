import pg from 'pg';
import { serverFromEnvironment } from '../examples/shared/postgres-server.js';
import { migrationStatements } from '../src/store/migration.js';
import { storePrimitives, type StorePrimitives } from '../src/store/primitives/store-primitives.js';
import { SESSION_CLEANUP } from '../src/store/pg-transaction.js';
import { BackendCpu } from './cpu.js';
import { median, round } from './stats.js';

/**
 * `npm run bench:statements`: the SQL of the transactional hot path alone, with no HTTP and no middleware, so
 * what Postgres spends on each version shows without the noise of the rest. Each connection loops over BEGIN,
 * claim, the business INSERT, completion, COMMIT for a fresh key; versions interleave in rounds and each figure
 * is the median. The store's versions run as the store sends them on a pipelined pool: the claim right behind
 * BEGIN, the completion with COMMIT. Versions: hand-written statements on the store's own wide row
 * (`handwritten`), the lean hand-written reference on a table of its own (`lean`, bench/handwritten.ts), the
 * store's statements as shipped (`shipped`: NOTIFY only while someone waits, the session clean-up after COMMIT),
 * the same without the clean-up (`withoutCleanup`), two ways of moving the clean-up's advisory unlock into the
 * completion that are not shipped (`unlockInCompletion`: a deferred trigger runs at COMMIT, after it;
 * `settledThenUnlock`: SET CONSTRAINTS ALL IMMEDIATE ahead of it, which closes that gap), and the store's
 * statements that always NOTIFY (as on PGlite), a listener connected so that notifications are delivered as in
 * production. Arguments: connections, seconds per round, rounds (default 8 4 5).
 */
const [connections = 8, seconds = 4, rounds = 5] = process.argv.slice(2).map(Number);
const postgres = await serverFromEnvironment();
const admin = new pg.Client({ connectionString: postgres.url });
await admin.connect();
const schema = 'bench_statements';
const table = { schema, table: 'idempotency_records' };
await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
for (const statement of migrationStatements(table, false)) await admin.query(statement);
await admin.query(
  `CREATE TABLE ${schema}.handwritten_keys (key text PRIMARY KEY, fingerprint bytea NOT NULL, fence bigint, response_status smallint, response_body bytea, created_at timestamptz NOT NULL DEFAULT now())`,
);
await admin.query(`CREATE TABLE ${schema}.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key text, amount integer NOT NULL)`);

const shipped = storePrimitives({ table, partitioned: false, notify: 'whenWaited' });
const alwaysNotify = storePrimitives({ table, partitioned: false, notify: 'always' });
const listener = new pg.Client({ connectionString: postgres.url });
await listener.connect();
await listener.query('LISTEN bench_statements');

const fingerprint = Buffer.alloc(32, 7);
const body = Buffer.from('{"id":"1","amount":100}');
const headers = '{"content-type":"application/json; charset=utf-8"}';
const records = `${schema}.idempotency_records`;
type Flow = (client: pg.ClientBase, key: string) => Promise<void>;
const business = (client: pg.ClientBase, key: string) => client.query(`INSERT INTO ${schema}.orders (key, amount) VALUES ($1, 100)`, [key]);

/** The advisory unlock of the session clean-up, in the completion: what `unlockInCompletion` measures. */
const UNLOCK_IN_COMPLETION = [
  'SELECT 1 / count(*)::int AS completed FROM notified',
  'SELECT 1 / count(*)::int AS completed, pg_catalog.pg_advisory_unlock_all() AS unlocked FROM notified',
] as const;
const AFTER_UNLOCK = SESSION_CLEANUP.replace('SELECT pg_catalog.pg_advisory_unlock_all(); ', '');
if (AFTER_UNLOCK === SESSION_CLEANUP) throw new Error('the session clean-up changed: AFTER_UNLOCK no longer applies');

interface StoreFlowOptions {
  commit?: string;
  unlockInCompletion?: boolean;
  /** SET CONSTRAINTS ALL IMMEDIATE sent ahead of the completion. */
  settled?: boolean;
}

function storeFlow(
  name: string,
  sql: StorePrimitives,
  { commit = `COMMIT; ${SESSION_CLEANUP}`, unlockInCompletion = false, settled = false }: StoreFlowOptions = {},
): Flow {
  let fence = 0;
  const completionText = unlockInCompletion ? sql.completeInClaimTransaction.text.replace(...UNLOCK_IN_COMPLETION) : sql.completeInClaimTransaction.text;
  if (unlockInCompletion && completionText === sql.completeInClaimTransaction.text) throw new Error('the completion changed: UNLOCK_IN_COMPLETION no longer applies');
  return async (client, key) => {
    const mark = String(++fence);
    // Sent together, answered together: a pipelined client writes each without waiting for the one before.
    const claim = { name: `${name}-claim`, text: sql.claimNewInTransaction!.text, values: ['', key, 'f'.repeat(64), 1, 30_000, 86_400, 'c', 't', mark] };
    await Promise.all([client.query(`BEGIN; SET LOCAL lock_timeout = 5000; SET LOCAL koa_idempotency.claim_mark = '${mark}'`), client.query(claim)]);
    await business(client, key);
    const completion = {
      name: `${name}-complete`,
      text: completionText,
      values: ['', key, mark, true, 201, headers, body, 'bench_statements', 'p'.repeat(32), 86_400, mark],
    };
    await Promise.all([settled ? client.query('SET CONSTRAINTS ALL IMMEDIATE') : undefined, client.query(completion), client.query(commit)]);
  };
}

const flows: Record<string, Flow> = {
  handwritten: async (client, key) => {
    await client.query('BEGIN');
    await client.query(
      `INSERT INTO ${records} (scope, key, fingerprint, fingerprint_version, status, fence, lease_expires_at, expires_at)
       VALUES ('', $1, $2, 1, 'in_progress', 0, now() + interval '30 seconds', now() + interval '24 hours') ON CONFLICT (scope, key) DO NOTHING`,
      [key, 'f'.repeat(64)],
    );
    await business(client, key);
    await client.query(
      `UPDATE ${records} SET status = 'completed', completed_at = now(), lease_expires_at = NULL, replayable = true,
       response_status = 201, response_headers = $2, response_body = $3 WHERE scope = '' AND key = $1 AND fence = 0`,
      [key, headers, body],
    );
    await client.query('COMMIT');
  },
  lean: async (client, key) => {
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${schema}.handwritten_keys (key, fingerprint) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, [key, fingerprint]);
    await business(client, key);
    await client.query(`UPDATE ${schema}.handwritten_keys SET response_status = $2, response_body = $3 WHERE key = $1`, [key, 201, body]);
    await client.query('COMMIT');
  },
  shipped: storeFlow('shipped', shipped),
  withoutCleanup: storeFlow('bare', shipped, { commit: 'COMMIT' }),
  unlockInCompletion: storeFlow('unlocking', shipped, { commit: `COMMIT; ${AFTER_UNLOCK}`, unlockInCompletion: true }),
  settledThenUnlock: storeFlow('settled', shipped, { commit: `COMMIT; ${AFTER_UNLOCK}`, unlockInCompletion: true, settled: true }),
  alwaysNotify: storeFlow('always', alwaysNotify),
};

// One pool client per connection, held for the whole run; BackendCpu reads their backends' CPU time. Pipelined,
// as the store's pool is: the hand-written versions wait for each answer anyway.
const pool = new pg.Pool({ connectionString: postgres.url, max: connections, pipeline: true });
// pool.end() resolves before its connections have closed: the server stopping next may still end one.
pool.on('error', () => undefined);
const backendCpu = new BackendCpu(pool);
const clients = await Promise.all(Array.from({ length: connections }, () => pool.connect()));

const run = Date.now().toString(36);
let next = 0;
const results = new Map(Object.keys(flows).map((name) => [name, { rate: [] as number[], cpuMs: [] as number[] }]));
for (let round_ = 0; round_ <= rounds; round_++) {
  for (const [name, flow] of Object.entries(flows)) {
    const endAt = Date.now() + seconds * 1000;
    const cpuBefore = backendCpu.totalMs();
    let done = 0;
    await Promise.all(
      clients.map(async (client) => {
        while (Date.now() < endAt) {
          await flow(client, `${name}-${run}-${next++}`);
          done++;
        }
      }),
    );
    // Round 0 warms up plans, caches and the JIT.
    if (round_ === 0) continue;
    results.get(name)!.rate.push(done / seconds);
    results.get(name)!.cpuMs.push((backendCpu.totalMs() - cpuBefore) / done);
  }
}
const handwrittenRate = median(results.get('handwritten')!.rate);
console.log(
  `${connections} connections, ${rounds} rounds of ${seconds} s (median)\n| version | sequences/s | × handwritten | Postgres CPU ms/sequence |\n|---|---:|---:|---:|`,
);
for (const [name, { rate, cpuMs }] of results) {
  console.log(`| ${name} | ${round(median(rate), 0)} | ${round(median(rate) / handwrittenRate)} | ${round(median(cpuMs), 3)} |`);
}
for (const client of clients) client.release();
await pool.end();
await listener.end();
await admin.end();
await postgres.stop();
