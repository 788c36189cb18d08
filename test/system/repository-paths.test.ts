/**
 * No file in the repository may name a relative path that climbs out of it.
 *
 * A test once read Grafana's JSON schemas from a `shared/` folder beside the repository: it passed on the machine
 * that had that folder and silently skipped in every clone. Test data, scripts and examples must live in the
 * repository (vendor them, as in test/fixtures/grafana-schema/), so this scans the text files of the folders below
 * for relative path tokens with a `..` segment, resolves each against the directory of the file that names it, and
 * fails on any that lands outside the repository root.
 *
 * Heuristic, kept simple: a token is a run of path characters; URLs (`scheme://...`) and absolute paths are ignored;
 * a path written after a computed directory (`$(dirname "$0")/..`, `${dir}/..`) is taken as relative to the file;
 * a list of quoted `..` arguments (as passed to `join`) counts as one path.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCANNED = ['src', 'test', 'bench', 'scripts', 'examples'];

/** Runs of quoted `..` arguments, or runs of path characters. */
const TOKEN = /(['"`])\.\.\1(?:\s*,\s*(['"`])\.\.\2)+|[\w.@~+\-/]+/g;
const URL_LIKE = /\b[a-z][\w+.-]*:\/\/[^\s'"`]*/gi;

/** Every relative path in `text` (the contents of `file`, relative to ROOT) that resolves outside ROOT, as `file:line: path`. */
function pathsLeavingRepository(file: string, text: string): string[] {
  const scannable = text.replace(URL_LIKE, (url) => ' '.repeat(url.length));
  const found: string[] = [];
  for (const match of scannable.matchAll(TOKEN)) {
    let path = match[0];
    if (match[1]) path = (path.match(/\.\./g) ?? []).join('/');
    if (!path.split('/').includes('..')) continue;
    if (path.startsWith('/')) {
      // An absolute path (or a URL path such as '/a/../b') names nothing relative; after `)` or `}` it follows a computed directory.
      if (!/[)}]/.test(scannable[match.index - 1] ?? '')) continue;
      path = path.slice(1);
    }
    const target = resolve(ROOT, dirname(file), path);
    const fromRoot = relative(ROOT, target);
    if (fromRoot === '..' || fromRoot.startsWith('../') || isAbsolute(fromRoot)) {
      const line = text.slice(0, match.index).split('\n').length;
      found.push(`${file}:${line}: ${JSON.stringify(match[0])} resolves to ${target}`);
    }
  }
  return found;
}

/** Files git tracks (or would add: untracked and not ignored) in the scanned folders. */
function repositoryFiles(): string[] {
  const output = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard', '--', ...SCANNED], { cwd: ROOT, encoding: 'utf8' });
  return [...new Set(output.split('\0').filter(Boolean))].filter((file) => existsSync(resolve(ROOT, file)));
}

describe('repository paths', () => {
  it('names no relative path outside the repository in src/, test/, bench/, scripts/ or examples/', () => {
    const files = repositoryFiles();
    expect(files).toContain('test/system/repository-paths.test.ts');
    const offenders = files.flatMap((file) => {
      const content = readFileSync(resolve(ROOT, file));
      return content.includes(0) ? [] : pathsLeavingRepository(file, content.toString('utf8'));
    });
    expect(offenders, 'vendor the data into the repository instead (see test/fixtures/grafana-schema/)').toEqual([]);
  });

  // The samples are built from UP so that this file itself names no climbing path.
  const UP = '..';
  const twoUp = `${UP}/${UP}`;

  it('flags a path leaving the repository (the check can fail)', () => {
    const flagged = (file: string, text: string) => pathsLeavingRepository(file, text).length;
    expect(pathsLeavingRepository('test/dashboards.test.ts', `x;\nnew URL('${twoUp}/shared/grafana-schema/', import.meta.url);`)).toEqual([
      `test/dashboards.test.ts:2: "${twoUp}/shared/grafana-schema/" resolves to ${resolve(ROOT, UP, 'shared/grafana-schema')}`,
    ]);
    expect(flagged('test/a.test.ts', `join(__dirname, '${UP}', '${UP}')`)).toBe(1);
    expect(flagged('test/a.test.ts', `join(__dirname,\n  '${UP}',\n  '${UP}',\n)`)).toBe(1);
    expect(flagged('scripts/a.sh', `cd "$(dirname "$0")/${twoUp}"`)).toBe(1);
    expect(flagged('examples/compose/docker-compose.yml', `context: ${twoUp}/${UP}`)).toBe(1);
  });

  it('accepts paths that stay inside and ignores URLs and absolute paths', () => {
    const samples: Array<[string, string]> = [
      ['examples/ledger/start.ts', `await import('${twoUp}/src/index.js'); await import('${UP}/shared/database.js');`],
      ['examples/compose/docker-compose.yml', `context: ${twoUp}\nvolumes:\n  - ${twoUp}/dashboards/x.json:/var/lib/grafana/x.json:ro`],
      ['test/a.test.ts', `new URL('${UP}', import.meta.url); new URL(\`${UP}/\${path}\`, import.meta.url); [...rest]; a..b`],
      ['test/a.test.ts', `fetch('http://x/${twoUp}/${twoUp}/'); fc.constantFrom('/payments/${twoUp}/${twoUp}/x')`],
    ];
    for (const [file, text] of samples) expect(pathsLeavingRepository(file, text), text).toEqual([]);
  });
});
