import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * The README's quick start, as a new user runs it: a fresh copy of the committed files, `npm ci`, then
 * `npm start` with no DATABASE_URL (embedded PGlite), and one idempotent request plus its retry.
 */
describe('README quick start in a fresh copy of the repository', () => {
  const copy = mkdtempSync(join(tmpdir(), 'koa-idempotency-quickstart-'));
  afterAll(() => rmSync(copy, { recursive: true, force: true }));

  it('installs, starts the payments example on PGlite and answers a payment and its replay', async () => {
    const files = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter(Boolean);
    for (const file of files) {
      mkdirSync(dirname(join(copy, file)), { recursive: true });
      cpSync(join(ROOT, file), join(copy, file));
    }
    execFileSync('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: copy, stdio: 'ignore', timeout: 240_000 });

    const [port, downstreamPort, metricsPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), DOWNSTREAM_PORT: String(downstreamPort), OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort) };
    delete env.DATABASE_URL;
    delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
    const child = spawn('npm', ['start'], { cwd: copy, env, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const lines = createInterface({ input: child.stdout! });
        lines.on('line', (line) => {
          const match = /payments API listening on (http:\/\/\S+)/.exec(line);
          if (match) resolve(match[1]!);
        });
        child.once('exit', () => reject(new Error('npm start exited before listening')));
        setTimeout(() => reject(new Error('npm start did not print its URL within 60 s')), 60_000).unref();
      });
      const pay = () =>
        fetch(`${url}/payments`, {
          method: 'POST',
          headers: { authorization: 'Bearer acct_1', 'idempotency-key': 'quickstart-1', 'content-type': 'application/json' },
          body: '{"amount":1000,"currency":"EUR"}',
        });
      const first = await pay();
      const retry = await pay();
      expect(first.status).toBe(201);
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(await retry.text()).toBe(await first.text());
      const list = await fetch(`${url}/payments`, { headers: { authorization: 'Bearer acct_1' } });
      expect(((await list.json()) as unknown[]).length).toBe(1);
    } finally {
      process.kill(-child.pid!, 'SIGTERM');
    }
  }, 300_000);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
    probe.once('error', reject);
  });
}
