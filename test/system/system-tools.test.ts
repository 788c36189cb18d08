import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { prepareTool, type SystemTool } from '../helpers/system-tools.js';

/**
 * prepareTool(), which the system tier's files run when they load: it installs only what is missing, skips only
 * where the machine cannot install, and fails loudly when an install that could work does not. The install
 * scripts here are small real scripts in a temporary directory; the real ones are exercised by the e2e files.
 */
const dir = mkdtempSync(join(tmpdir(), 'koa-idempotency-system-tools-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A tool "installed" by its script creating `binary`; `script` is the body of the install script. */
function tool(name: string, script: string, cannotInstall?: string): SystemTool & { binary: string; ran: string } {
  const binary = join(dir, `${name}-binary`);
  const ran = join(dir, `${name}-ran`);
  const path = join(dir, `install-${name}.sh`);
  writeFileSync(path, `touch ${JSON.stringify(ran)}\n${script}\n`);
  chmodSync(path, 0o755);
  return { name, script: path, binary, ran, find: () => (existsSync(binary) ? binary : undefined), cannotInstall: () => cannotInstall };
}

describe('prepareTool()', () => {
  it('returns a tool that is there without running its install script', async () => {
    const present = tool('present', 'exit 1');
    writeFileSync(present.binary, '');
    await expect(prepareTool(present)).resolves.toEqual({ binary: present.binary });
    expect(existsSync(present.ran)).toBe(false);
  });

  it('runs the install script of a missing tool and returns what it installed', async () => {
    const missing = tool('missing', 'echo "missing: installing"; touch "$(dirname "$0")/missing-binary"');
    await expect(prepareTool(missing)).resolves.toEqual({ binary: missing.binary });
    expect(existsSync(missing.ran)).toBe(true);
  });

  it('gives the reason the machine cannot have the tool, for the skipped test name, and installs nothing', async () => {
    const impossible = tool('impossible', 'exit 1', 'no Go toolchain to build it');
    await expect(prepareTool(impossible)).resolves.toEqual({ skipReason: 'no Go toolchain to build it' });
    expect(existsSync(impossible.ran)).toBe(false);
  });

  it('fails, with the end of the script output, when an install that could work does not: no quiet skip', async () => {
    const broken = tool('broken', 'echo "E: Unable to locate package broken" >&2; exit 100');
    await expect(prepareTool(broken)).rejects.toThrow(/failed \(exit 100\); its last output:\n.*Unable to locate package broken/);
  });

  it('fails when the script succeeds but the tool is still not there', async () => {
    const liar = tool('liar', 'exit 0');
    await expect(prepareTool(liar)).rejects.toThrow('finished, yet liar is still not found');
  });
});
