import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ServerKind } from './app.js';

export interface ServerSpec {
  kind: ServerKind;
  /** Schema of this server's records and business tables (created by the runner). */
  schema: string;
  telemetry?: boolean;
  /** Store option replayCacheEntries; undefined keeps the library default. */
  replayCacheEntries?: number;
  /** Store option partitioning: the records table is partitioned by time (migrated so by the runner). */
  partitioned?: boolean;
  /** false: the server's pool does not pipeline (see server.ts). */
  pipeline?: boolean;
}

export interface ServerStats {
  roundTrips: number;
  requests: number;
  maxRssMb: number;
  /** CPU time of the server process so far. */
  serverCpuMs: number;
  /** CPU time of the Postgres backends of the server's pool so far. */
  databaseCpuMs: number;
}

/** A benchmarked server in its own Node process, so its CPU, memory and event loop are its own. */
export class ServerProcess {
  readonly url: string;
  readonly #child: ChildProcess;

  private constructor(child: ChildProcess, port: number) {
    this.#child = child;
    this.url = `http://127.0.0.1:${port}`;
  }

  static async start(spec: ServerSpec, databaseUrl: string): Promise<ServerProcess> {
    const child = fork(fileURLToPath(new URL('./server.ts', import.meta.url)), [], {
      // BENCH_PROFILE_DIR=<dir> writes a V8 CPU profile of every server (open it in Chrome DevTools).
      execArgv: ['--import', 'tsx', ...(process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [])],
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl,
        BENCH_SERVER: spec.kind,
        BENCH_SCHEMA: spec.schema,
        BENCH_TELEMETRY: spec.telemetry ? '1' : '0',
        ...(spec.replayCacheEntries === undefined ? {} : { BENCH_REPLAY_CACHE_ENTRIES: String(spec.replayCacheEntries) }),
        BENCH_PARTITIONED: spec.partitioned ? '1' : '0',
        BENCH_PIPELINE: spec.pipeline === false ? '0' : '1',
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server ${spec.kind} did not start within 30 s`)), 30_000);
      child.once('exit', (code) => reject(new Error(`server ${spec.kind} exited with code ${code} before it was ready`)));
      child.on('message', (message: { type: string; port?: number }) => {
        if (message.type !== 'ready') return;
        clearTimeout(timer);
        resolve(message.port!);
      });
    });
    child.removeAllListeners('exit');
    return new ServerProcess(child, port);
  }

  stats(): Promise<ServerStats> {
    return new Promise((resolve) => {
      const onMessage = (message: ServerStats & { type: string }) => {
        if (message.type !== 'stats') return;
        this.#child.off('message', onMessage);
        const { type: _type, ...stats } = message;
        resolve(stats);
      };
      this.#child.on('message', onMessage);
      this.#child.send({ type: 'stats' });
    });
  }

  /** Disconnecting tells the child to close its server and pool and exit; kill it if it does not. */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.disconnect();
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}
