import { randomBytes } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import pg from 'pg';
import { diag, DiagLogLevel } from '@opentelemetry/api';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { freePort } from '../../examples/shared/free-port.js';
import { idempotency, type ClaimRequest } from '../../src/index.js';
import { PostgresStore, type PostgresStoreOptions } from '../../src/entries/postgres.js';
import { DATABASE_URL, databaseTargets, rowsWithKey, type TestDatabase } from '../helpers/databases.js';
import { countWatches, until } from '../helpers/events.js';
import { postJson, serve } from '../helpers/http.js';
import { debianPackageUnavailable, firstRunnable, prepareTool } from '../helpers/system-tools.js';

/**
 * The store behind a real PgBouncer in transaction pooling (Debian's `pgbouncer`, 1.18 on bookworm;
 * scripts/install-pgbouncer.sh installs it when this file loads and it is missing). The test starts its own PgBouncer on a free
 * loopback port, in front of the test server, with the settings the README names for it.
 */

/** The settings the README names for a transaction-pooling PgBouncer older than 1.21. */
const BEHIND_PGBOUNCER: Pick<PostgresStoreOptions, 'preparedStatements' | 'waitStrategy' | 'pollIntervalMs'> = {
  preparedStatements: false,
  waitStrategy: 'poll',
  pollIntervalMs: 50,
};

const { binary, skipReason } = await prepareTool({
  name: 'pgbouncer',
  script: 'install-pgbouncer.sh',
  find: () => firstRunnable(['pgbouncer', '/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'], ['--version']),
  cannotInstall: () => debianPackageUnavailable('pgbouncer'),
});
const version = binary ? /PgBouncer (\d+)\.(\d+)/.exec(spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout) : null;
const before121 = version !== null && (Number(version[1]) < 1 || (Number(version[1]) === 1 && Number(version[2]) < 21));
const missing = binary ? '' : ` (skipped: ${skipReason})`;

/** The library's diag warnings. */
const warnings: string[] = [];
diag.setLogger(
  { error: () => undefined, warn: (message) => void warnings.push(message), info: () => undefined, debug: () => undefined, verbose: () => undefined },
  DiagLogLevel.WARN,
);

interface Bouncer {
  url: string;
  log: string[];
  stop(): Promise<void>;
}

/**
 * PgBouncer in transaction pooling on a free loopback port, in front of the server at `serverUrl`, with a
 * temporary configuration. It refuses to run as root: as root it runs as the `postgres` OS user.
 */
async function startPgBouncer(executable: string, serverUrl: string): Promise<Bouncer> {
  const server = new URL(serverUrl);
  const user = decodeURIComponent(server.username);
  // Clients authenticate to PgBouncer by SCRAM, which needs a password: a server that trusts its local users
  // (a DATABASE_URL without one) gets a password of the test's own, which it ignores.
  const password = server.password ? decodeURIComponent(server.password) : randomBytes(12).toString('hex');
  const port = await freePort();
  const directory = mkdtempSync(join(tmpdir(), 'koa-idempotency-pgbouncer-'));
  writeFileSync(join(directory, 'userlist.txt'), `"${user}" "${password}"\n`);
  writeFileSync(
    join(directory, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=${server.hostname} port=${server.port}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${join(directory, 'userlist.txt')}`,
      'pool_mode = transaction',
      'default_pool_size = 4',
      'max_client_conn = 200',
      '',
    ].join('\n'),
  );
  const asUser = process.getuid?.() === 0 ? postgresUser() : undefined;
  if (asUser) chmodSync(directory, 0o755);
  const child: ChildProcess = spawn(executable, [join(directory, 'pgbouncer.ini')], { stdio: ['ignore', 'pipe', 'pipe'], ...asUser });
  const log: string[] = [];
  child.stdout!.on('data', (chunk: Buffer) => log.push(chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => log.push(chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Also when an afterAll hook times out: the worker's exit takes PgBouncer with it.
  const killOnExit = () => child.kill('SIGTERM');
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));
  const url = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${server.pathname.slice(1) || 'postgres'}`;
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(directory, { recursive: true, force: true });
  };
  // Ready once a client gets an answer through it; an exit ends the wait at once.
  let lastError: unknown;
  const answers = async () => {
    if (child.exitCode !== null) throw new Error(`PgBouncer exited with ${child.exitCode}`);
    const probe = new pg.Client({ connectionString: url });
    try {
      await probe.connect();
      await probe.query('SELECT 1');
      return true;
    } catch (error) {
      lastError = error;
      return undefined;
    } finally {
      await probe.end().catch(() => undefined);
    }
  };
  try {
    await until(answers, 'PgBouncer to answer', 10_000);
  } catch (error) {
    await stop();
    throw new Error(`PgBouncer did not start: ${String(error)}; the last probe: ${String(lastError)}\n${log.join('')}`, { cause: error });
  }
  return { url, log, stop };
}

/** The `postgres` OS user's ids, for running PgBouncer when the tests run as root (CI, containers). */
function postgresUser(): { uid: number; gid: number } {
  const id = (flag: string) => {
    const value = Number.parseInt(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout, 10);
    if (Number.isNaN(value)) throw new Error('PgBouncer refuses to run as root, and there is no `postgres` OS user to run it as');
    return value;
  };
  return { uid: id('-u'), gid: id('-g') };
}

describe.skipIf(!binary)(`the store behind PgBouncer in transaction pooling${missing}`, () => {
  let db: TestDatabase;
  let bouncer: Bouncer;
  const pools: pg.Pool[] = [];
  const stores: PostgresStore[] = [];
  let tables = 0;

  beforeEach(() => {
    warnings.length = 0;
  });
  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('pgbouncer');
    await db.sql.query(`CREATE TABLE "${db.schema}".charges (key text NOT NULL, execution int NOT NULL)`);
    bouncer = await startPgBouncer(binary!, DATABASE_URL);
  });
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close()));
    await Promise.all(pools.map((pool) => pool.end().catch(() => undefined)));
    await bouncer?.stop();
    await db?.close();
  });

  /** A migrated store on a table of its own, every statement of it (the migration too) through PgBouncer. */
  async function bouncedStore(options: Omit<PostgresStoreOptions, 'pool' | 'schema' | 'table'>): Promise<PostgresStore> {
    const pool = new pg.Pool({ connectionString: bouncer.url, max: 10 });
    pool.on('error', () => undefined);
    pools.push(pool);
    const store = new PostgresStore({ pool, schema: db.schema, table: `records_${++tables}`, ...options });
    stores.push(store);
    await store.migrate();
    return store;
  }

  const chargesOf = (key: string) => rowsWithKey(db.sql, `"${db.schema}".charges`, key);

  /**
   * 20 concurrent identical requests, the duplicates waiting (polling) for the first: one execution, one
   * charge, and the same 201 for all, 19 of them replays.
   */
  async function provesExactlyOnce(transactional: boolean): Promise<void> {
    const store = await bouncedStore({ ...BEHIND_PGBOUNCER, replayCacheEntries: 0 });
    const waiting = countWatches(store);
    const charges = `"${db.schema}".charges`;
    let executions = 0;
    const errors: string[] = [];
    const app = new Koa();
    app.silent = true;
    app.on('error', (error: Error) => void errors.push(String(error)));
    app.use(bodyParser());
    app.use(idempotency({ store, transactional, onInProgress: 'wait', waitMs: 15_000 }));
    app.use(async (ctx) => {
      const execution = ++executions;
      await until(() => (waiting() >= 19 ? true : undefined), 'the 19 duplicates waiting'); // they arrive while it runs
      // Transactional: the charge goes through the claim's transaction, so through PgBouncer too.
      const sql = ctx.idempotency!.db ?? db.sql;
      await sql.query(`INSERT INTO ${charges} (key, execution) VALUES ($1, $2)`, [ctx.idempotency!.key, execution]);
      ctx.status = 201;
      ctx.body = { execution };
    });
    const server = await serve(app);
    const key = `bounced-${transactional ? 'tx' : 'lease'}`;
    try {
      const answers = await Promise.all(Array.from({ length: 20 }, () => postJson(`${server.url}/charges`, { amount: 5 }, { key })));
      expect(
        answers.map((answer) => `${answer.status} ${answer.text}`),
        `application errors: ${errors.join('; ')}\nPgBouncer's last lines:\n${bouncer.log.join('').split('\n').slice(-20).join('\n')}`,
      ).toEqual(Array(20).fill('201 {"execution":1}'));
      expect(answers.filter((answer) => answer.headers.get('idempotent-replayed') === 'true')).toHaveLength(19);
      expect(executions).toBe(1);
      expect(await chargesOf(key)).toBe(1);
      expect(warnings).toEqual([]);
    } finally {
      await server.close();
    }
  }

  it('executes exactly once among 20 concurrent duplicates that poll for the first, in lease mode, with preparedStatements: false', async () => {
    await provesExactlyOnce(false);
  });

  it('executes exactly once among 20 concurrent duplicates that poll for the first, in transactional mode, with preparedStatements: false', async () => {
    await provesExactlyOnce(true);
  });

  it.skipIf(!before121)(
    `fails with the default named prepared statements, which PgBouncer before 1.21 cannot carry, and says through diag to set preparedStatements: false${before121 ? '' : ' (skipped: PgBouncer 1.21 or later)'}`,
    async () => {
      const store = await bouncedStore({ waitStrategy: 'poll', replayCacheEntries: 0 });
      const request = (key: string): ClaimRequest => ({ scope: 's', key, fingerprint: 'f', fingerprintVersion: 1, leaseMs: 10_000, ttlSeconds: 60 });
      const outcomes = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          store.claim(request(`prepared-${i}`)).then(
            () => 'ok',
            (error: { code?: string }) => error.code ?? 'no code',
          ),
        ),
      );
      // 26000: prepared statement does not exist (prepared on another server connection); 42P05: already exists.
      expect(outcomes.filter((outcome) => outcome === '26000' || outcome === '42P05').length).toBeGreaterThan(0);
      // Once per store, however many statements fail, naming the option that fixes it.
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/preparedStatements: false/);
    },
  );
});
