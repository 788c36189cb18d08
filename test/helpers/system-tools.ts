import { spawn, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The programs of the system tier (Prometheus, PgBouncer, Jaeger), prepared by the test file that needs them when
 * it loads: found where its install script puts it, else installed by that script (idempotent, cached, and locked
 * inside the script, so two files that start together never install twice). Per file rather than in a global
 * setup, so that `npx vitest run test/unit/key.test.ts` never waits for a Jaeger build it does not need.
 *
 * A tool the machine cannot have (no Go toolchain, no apt-get, neither root nor passwordless sudo) gives the reason
 * for the skipped test's name. An install that fails on a machine that could have the tool throws: the file fails
 * instead of quietly skipping what a newcomer's `npm test` is meant to run.
 */
export interface SystemTool {
  /** As the progress lines and errors name it. */
  name: string;
  /** The install script, relative to scripts/ (or an absolute path). */
  script: string;
  /** The executable when it is there, without installing anything. */
  find(): string | undefined;
  /** Why this machine cannot install it, or undefined when the script can. */
  cannotInstall(): string | undefined;
}

export type PreparedTool = { binary: string; skipReason?: undefined } | { binary?: undefined; skipReason: string };

const SCRIPTS = fileURLToPath(new URL('../../scripts/', import.meta.url));

/** The first candidate that runs with `args` (`--version`), e.g. a Debian binary in /usr/sbin off a user's PATH. */
export function firstRunnable(candidates: readonly string[], args: readonly string[]): string | undefined {
  return candidates.find((candidate) => spawnSync(candidate, args, { stdio: 'ignore', timeout: 30_000 }).status === 0);
}

const succeeds = (command: string) => spawnSync('sh', ['-c', command], { stdio: 'ignore', timeout: 30_000 }).status === 0;

/** Why Debian's `packageName` cannot be installed here: no apt-get, or neither root nor passwordless sudo. */
export function debianPackageUnavailable(packageName: string): string | undefined {
  if (!succeeds('command -v apt-get')) return `no apt-get on this machine to install Debian's ${packageName}`;
  if (process.getuid?.() !== 0 && !succeeds('sudo -n true')) return `not root and no passwordless sudo to install Debian's ${packageName}`;
  return undefined;
}

/** Finds the tool, or installs it with its script (progress on this process's stderr, live). */
export async function prepareTool(tool: SystemTool): Promise<PreparedTool> {
  const found = tool.find();
  if (found) return { binary: found };
  const reason = tool.cannotInstall();
  if (reason) return { skipReason: reason };
  await runScript(tool);
  const installed = tool.find();
  if (!installed) throw new Error(`scripts/${tool.script} finished, yet ${tool.name} is still not found`);
  return { binary: installed };
}

function runScript(tool: SystemTool): Promise<void> {
  process.stderr.write(`[${tool.name}] not found: preparing it with scripts/${tool.script} (once per machine)\n`);
  // stdin closed: CI runs without one, and nothing here may wait for an answer.
  const child = spawn('bash', [resolve(SCRIPTS, tool.script)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  const relay = (chunk: Buffer) => {
    const text = chunk.toString();
    tail = (tail + text).slice(-4_000);
    // The script's own lines already start with the tool's name; the others get it, so a reader knows whose they are.
    process.stderr.write(text.replace(new RegExp(`^(?!${tool.name}:)(?=.)`, 'gm'), `[${tool.name}] `));
  };
  child.stdout.on('data', relay);
  child.stderr.on('data', relay);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`scripts/${tool.script} failed (${signal ?? `exit ${code}`}); its last output:\n${tail}`)),
    );
  });
}
