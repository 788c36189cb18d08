import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type * as Core from '../src/index.js';
import type * as Otel from '../src/entries/otel.js';
import type * as Postgres from '../src/entries/postgres.js';

/** The package entries the bench's servers load, typed by their sources. */
interface Entries {
  'index.js': typeof Core;
  'entries/postgres.js': typeof Postgres;
  'entries/otel.js': typeof Otel;
}

const DIST = new URL('../dist/', import.meta.url);

/**
 * One entry of the library as its users run it: the build in dist/ (tsc's output, refreshed by run.ts before
 * any server starts), not tsx's transform of src/. Under tsx, esbuild keeps function names by wrapping every
 * function created at run time in a `__name` call: a cost the library's per-request closures would pay in the
 * bench and never in production. A server loads every entry from here, so that one copy of the library runs.
 */
export function builtEntry<E extends keyof Entries>(entry: E): Promise<Entries[E]> {
  return import(new URL(entry, DIST).href) as Promise<Entries[E]>;
}

/** Refreshes dist/ from src/ (`npm run build`), ahead of the servers that load it. */
export function buildLibrary(): void {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: 'inherit' });
}
