import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const SERVER = fileURLToPath(new URL('../fixtures/server.ts', import.meta.url));

export interface ChildServer {
  url: string;
  process: ChildProcess;
  /** Resolves with the exit signal (e.g. 'SIGKILL') or code once the process is gone. */
  exited: Promise<NodeJS.Signals | number | null>;
  /** Resolves once the process has printed a stdout line equal to `line` (now or earlier). */
  printed(line: string): Promise<void>;
  stop(): Promise<void>;
}

/** Starts test/fixtures/server.ts in a real child process and waits for its port. */
export async function startChildServer(env: Record<string, string>): Promise<ChildServer> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  // Every line is kept: a test may ask for one the process printed before the test asked.
  const seen: string[] = [];
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (line) => seen.push(line));
  const port = await new Promise<number>((resolve, reject) => {
    lines.once('line', (line) => resolve((JSON.parse(line) as { port: number }).port));
    child.once('exit', () => reject(new Error('the child server exited before listening')));
    setTimeout(() => reject(new Error('the child server did not start within 30 s')), 30_000).unref();
  });
  return {
    url: `http://127.0.0.1:${port}`,
    process: child,
    exited,
    printed(line) {
      if (seen.includes(line)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const onLine = (printed: string) => {
          if (printed !== line) return;
          lines.off('line', onLine);
          resolve();
        };
        lines.on('line', onLine);
        void exited.then(() => reject(new Error(`the child server exited without printing ${line}`)));
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
