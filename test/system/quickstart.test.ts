import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { exampleEnvironment } from '../helpers/example-environment.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The README's default port: the test runs the commands on free ports instead, so it can run beside `npm start`. */
const README_PORT = 3000;

/** The shell blocks of the README's "Quick start" section, in order. */
function quickStartBlocks(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = /^## Quick start\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? '';
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]!);
}

/**
 * The README's quick start, as a new user runs it: a fresh copy of the committed files, then its commands as
 * written (on free ports instead of 3000): `npm install && npm start` with no DATABASE_URL (the example starts its
 * own Postgres server), the curl loop from another terminal, and the CLI's `inspect` on the printed DATABASE_URL.
 */
describe('README quick start in a fresh copy of the repository', () => {
  const copy = mkdtempSync(join(tmpdir(), 'koa-idempotency-quickstart-'));
  // mkdtemp makes the directory private (700); a clone's directory is 755, which the server's `postgres` user can enter.
  chmodSync(copy, 0o755);
  let child: ChildProcess | undefined;
  afterAll(async () => {
    if (child?.exitCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      process.kill(-child.pid!, 'SIGTERM');
      await exited;
    }
    rmSync(copy, { recursive: true, force: true });
  });

  it('installs and starts the example, replays the curl retry, and inspects the key with the CLI', async () => {
    const [startBlock, curlBlock, inspectBlock] = quickStartBlocks();
    const startCommand = startBlock!.split('\n')[0]!.replace(/#.*/, '').trim();
    expect(startCommand).toBe('npm install && npm start');
    for (const file of execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter(Boolean)) {
      mkdirSync(dirname(join(copy, file)), { recursive: true });
      cpSync(join(ROOT, file), join(copy, file));
    }

    const { env, ports } = await exampleEnvironment({ npm_config_audit: 'false', npm_config_fund: 'false' });
    const port = ports.payments;
    child = spawn('bash', ['-c', startCommand], { cwd: copy, env, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    const printed = await new Promise<{ url: string; databaseUrl: string }>((resolve, reject) => {
      let databaseUrl = '';
      createInterface({ input: child!.stdout! }).on('line', (line) => {
        databaseUrl = /^DATABASE_URL=(\S+)$/.exec(line)?.[1] ?? databaseUrl;
        const match = /payments API listening on (http:\/\/\S+)/.exec(line);
        if (match) resolve({ url: match[1]!, databaseUrl });
      });
      child!.once('exit', () => reject(new Error('npm install && npm start exited before listening')));
      setTimeout(() => reject(new Error('npm install && npm start did not print its URL within 240 s')), 240_000).unref();
    });
    expect(printed.url).toBe(`http://localhost:${port}`);
    expect(printed.databaseUrl).toMatch(/^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:\d+\/postgres$/);

    const curl = execFileSync('bash', ['-c', curlBlock!.replaceAll(`localhost:${README_PORT}`, `localhost:${port}`)], { encoding: 'utf8' });
    const lines = curl.trim().split(/\r?\n/);
    const [firstStatus, firstBody, retryStatus, replayed, retryBody, list] = lines;
    expect(lines).toHaveLength(6);
    expect(firstStatus).toMatch(/^HTTP\/1\.1 201 Created/);
    expect(retryStatus).toMatch(/^HTTP\/1\.1 201 Created/);
    expect(replayed).toMatch(/^Idempotent-Replayed: true/i);
    expect(retryBody).toBe(firstBody);
    expect(JSON.parse(list!)).toEqual([JSON.parse(firstBody!)]);

    // The README's second terminal: the operator CLI on the URL `npm start` printed.
    const inspect = execFileSync('bash', ['-c', inspectBlock!.replace('<printed by npm start>', printed.databaseUrl)], { cwd: copy, env, encoding: 'utf8' });
    expect(inspect).toMatch(/status\s+completed \(response 201, replayable\)/);
  }, 360_000);
});
