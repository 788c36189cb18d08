import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigError, type IdempotencyStore } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { terminate } from '../helpers/child-processes.js';
import { DATABASE_URL, databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on the application's hooks written as async functions (now refused at construction) or as
 * functions returning a promise (now a failure of the hook, reported, with its documented fallback), as a JavaScript caller (or a
 * TypeScript one through `any`) writes a predicate that looks something up: `required`, `shouldStore` and
 * `routeName` are called without await, and their promise is taken for the answer. A promise is truthy, so
 * `required: async () => false` refuses every request without a key, and `shouldStore: async (s) => s < 500`
 * stores a 5xx, which every retry then replays instead of running the request again. A promise that rejects is
 * left unhandled, and Node ends the process on an unhandled rejection: one request takes the server down.
 */

const SERVER = fileURLToPath(new URL('../fixtures/async-hook-server.ts', import.meta.url));

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('an idempotency hook written as an async function', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_async_hooks');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  /** An async function is refused where the library calls the hook without awaiting it: said at once, not per request. */
  it.each([
    ['required', { required: (async () => false) as unknown as () => boolean }],
    ['shouldStore', { shouldStore: (async (status: number) => status < 500) as unknown as () => boolean }],
    ['routeName', { routeName: (async () => 'orders') as unknown as () => string }],
  ])('%s given as an async function is refused at construction with IdempotencyConfigError', (_hook, options) => {
    expect(() => createTestApp({ store: postgres, options })).toThrow(IdempotencyConfigError);
  });

  it('shouldStore returning a promise (not declared async) stores nothing: the 503 is not replayed, the retry runs the request again', async () => {
    const { app, executions } = createTestApp({
      store: postgres,
      options: { shouldStore: ((status: number) => Promise.resolve(status < 500)) as unknown as () => boolean },
      respond: (ctx, execution) => {
        ctx.status = execution === 1 ? 503 : 201;
        ctx.body = { execution };
      },
    });
    const http = await serve(app);
    closing.push(() => http.close());
    const key = newKey('promise-should-store');
    const first = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    const retry = await postJson(`${http.url}/orders`, { amount: 1 }, { key, account: 'a' });
    expect({ first: first.status, retry: retry.status, replayed: retry.headers.get('idempotent-replayed'), executions: executions.length }).toEqual({
      first: 500,
      retry: 500,
      replayed: null,
      executions: 2,
    });
  });

  async function startServer(hook: string) {
    const child = spawn(process.execPath, ['--import', 'tsx', SERVER], {
      env: { ...process.env, DATABASE_URL, SCHEMA: db.schema, HOOK: hook },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    closing.push(() => terminate(child, 2_000));
    const lines = createInterface({ input: child.stdout });
    const port = await new Promise<number>((resolve, reject) => {
      lines.once('line', (line) => resolve((JSON.parse(line) as { port: number }).port));
      child.once('exit', (code) => reject(new Error(`the server exited (${code}) before listening`)));
    });
    return { url: `http://127.0.0.1:${port}`, child };
  }

  /** The process's fate once a request has met the hook: still serving, or gone with its exit code. */
  async function fateAfter(request: (url: string) => Promise<unknown>, hook: string) {
    const { url, child } = await startServer(hook);
    const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(`exited (${signal ?? code})`)));
    const stderr: string[] = [];
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
    await request(url).catch(() => undefined);
    const next = await postJson(`${url}/orders`, { amount: 2 }, { key: newKey('next'), account: 'a' }).then(
      (answer) => `serving (${answer.status})`,
      () => undefined,
    );
    // Not answering: the process is gone, or going (its exit code says why).
    const fate = next ?? (await exited);
    return {
      fate,
      stderr: stderr
        .join('')
        .split('\n')
        .find((line) => line.startsWith('Error')),
    };
  }

  it.each([
    ['required', (url: string) => postJson(`${url}/orders`, { amount: 1 }, { account: 'a' })],
    ['shouldStore', (url: string) => postJson(`${url}/orders`, { amount: 1 }, { key: newKey('should-store'), account: 'a' })],
    ['routeName', (url: string) => postJson(`${url}/orders`, { amount: 1 }, { key: newKey('route-name'), account: 'a' })],
  ])('a %s returning a promise that rejects does not end the process: the next request is answered', async (hook, request) => {
    const { fate, stderr } = await fateAfter(request, hook);
    // shouldStore fails again on the next request (500 request-failed); the others let it through.
    expect(fate, `the process's error: ${stderr}`).toBe(hook === 'shouldStore' ? 'serving (500)' : 'serving (201)');
  });
});
