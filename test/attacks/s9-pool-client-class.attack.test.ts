import { createRequire } from 'node:module';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsWithKey } from '../helpers/databases.js';
import { chargingHandler, openChargesTable, postKeyed, serveKeyedApp, type ChargesTable, type ChargingHandler, type KeyedApp } from '../helpers/keyed-requests.js';

/**
 * The store submits node-postgres `Query` objects. A pipelined node-postgres client refuses a submittable that is
 * not `instanceof` its own `Query` ("Custom query classes … are not supported in pipeline mode"). The pool's
 * clients may come from a class the application chose: a subclass of pg.Client (logging/timing `query`), a
 * prototype-wrapped `query`, or pg.Client of a second copy of node-postgres (two versions installed side by side,
 * the pool created by the application's copy). Each must still run a keyed request once and replay its retry.
 */
const require = createRequire(import.meta.url);

/** A second, distinct module instance of node-postgres (its own Client and Query classes), as a nested install gives. */
function secondCopyOfPg(): typeof pg {
  const saved = new Map<string, NodeModule>();
  for (const id of Object.keys(require.cache)) {
    if (/[\\/]node_modules[\\/]pg[\\/]/.test(id)) {
      saved.set(id, require.cache[id]!);
      delete require.cache[id];
    }
  }
  const copy = require('pg') as typeof pg;
  for (const [id, module] of saved) require.cache[id] = module;
  return copy;
}
const pg2 = secondCopyOfPg();

const log: string[] = [];
class LoggingClient extends pg.Client {
  // A subclass that logs and hands back whatever node-postgres returns.
  override query(...args: unknown[]): never {
    const first = args[0] as { text?: string } | string;
    log.push(typeof first === 'string' ? first : String(first?.text));
    return (super.query as (...a: unknown[]) => never)(...args);
  }
}
class AwaitingClient extends pg.Client {
  // A timing wrapper written for the promise API: always returns a promise.
  override query(...args: unknown[]): never {
    const started = performance.now();
    const result = (super.query as (...a: unknown[]) => unknown)(...args);
    return Promise.resolve(result).finally(() => log.push(`took ${performance.now() - started}`)) as never;
  }
}

let table: ChargesTable;
let charges: string;
let admin: pg.Pool;
beforeAll(async () => {
  table = await openChargesTable('s9_client_class');
  ({ charges, admin } = table);
});
afterAll(() => table.close());

const clients = { 'second copy of pg': pg2.Client, 'logging subclass': LoggingClient, 'awaiting subclass': AwaitingClient } as const;
const cases = (Object.keys(clients) as Array<keyof typeof clients>).flatMap((client) =>
  [false, true].flatMap((pipeline) => [false, true].map((transactional) => ({ client, pipeline, transactional }))),
);

describe.each(cases)('pool Client option: %o', ({ client, pipeline, transactional }) => {
  let app: KeyedApp;
  let charging: ChargingHandler;
  let pool: pg.Pool;
  beforeAll(async () => {
    charging = chargingHandler(table, transactional);
    app = await serveKeyedApp(table, { transactional, pool: { max: 3, pipeline, Client: clients[client] } }, charging.middleware);
    pool = app.pool;
  });
  afterAll(() => app?.close());

  const post = (key: string) => postKeyed(app.url, key);

  it('the second copy is a distinct module instance', () => {
    expect(pg2.Query).not.toBe(pg.Query);
    expect(pg2.Client).not.toBe(pg.Client);
  });

  it('runs once, the retry replays, the pool whole', async () => {
    const key = `s9-cc-${Date.now()}-${Math.random()}`;
    const before = charging.executions;
    const first = await post(key);
    const second = await post(key);
    expect({ first: first.status, second: second.status, replayed: second.replayed }, first.text).toEqual({ first: 201, second: 201, replayed: 'true' });
    expect(charging.executions - before).toBe(1);
    expect(await rowsWithKey(admin, charges, key)).toBe(1);
    expect(pool.waitingCount).toBe(0);
  });
});
