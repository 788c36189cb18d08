import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Client, Pool, PoolClient, QueryConfig } from 'pg';
import type { SqlDatabase, SqlQueryable, SqlResult, SqlTransaction, Unsubscribe } from './sql-database.js';

export interface PgDatabaseOptions {
  /**
   * Statement texts to run as named prepared statements, parsed and planned once per connection instead
   * of on every call (planning the store's claim costs more than executing it). Only fixed texts belong
   * here: each is kept by every connection for its lifetime. Other statements run unnamed.
   * @default none
   */
  preparedStatements?: Iterable<string>;
}

/**
 * Adapts a node-postgres `Pool`. LISTEN needs a session of its own that stays open (a transaction-pooling
 * PgBouncer cannot hold one), so the adapter opens ONE extra connection with the pool's own settings the
 * first time something listens, instead of pinning one of the pool's clients forever.
 */
export function fromPgPool(pool: Pool, options: PgDatabaseOptions = {}): SqlDatabase {
  return new PgDatabase(pool, new Statements(options.preparedStatements ?? []));
}

/** Turns a text and its parameters into a node-postgres query, named when the text is a prepared one. */
class Statements {
  readonly #names = new Map<string, string>();
  /** Per connection: the statements also prepared with SQL PREPARE, for EXECUTE inside a simple query. */
  readonly #sqlPrepared = new WeakMap<object, Set<string>>();

  constructor(prepared: Iterable<string>) {
    for (const text of prepared) {
      // A name derived from the text: the same statement gets the same name on every connection, and
      // two stores on different tables never collide.
      this.#names.set(text, `koa_idempotency_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`);
    }
  }

  config(text: string, params: unknown[] | undefined): QueryConfig {
    const name = this.#names.get(text);
    return name === undefined ? { text, values: params as QueryConfig['values'] } : { name, text, values: params as QueryConfig['values'] };
  }

  /**
   * The statement as `EXECUTE name(<literals>)`, so that it can share a simple query (one round trip) with
   * BEGIN or COMMIT; undefined for a statement that is not a prepared one or a parameter without a literal
   * form. The first use on a connection prepares it there with SQL PREPARE, once, outside any transaction
   * (a prepared statement outlives a rollback, and a failed PREPARE must not leave a guess behind).
   */
  async inline(client: PoolClient, text: string, params: unknown[]): Promise<string | undefined> {
    const name = this.#names.get(text);
    const literals = params.map(toLiteral);
    if (name === undefined || literals.includes(undefined)) return undefined;
    const sqlName = `${name}_sql`;
    let prepared = this.#sqlPrepared.get(client);
    if (!prepared?.has(sqlName)) {
      await client.query(`PREPARE ${sqlName} AS ${text}`);
      prepared ??= new Set();
      prepared.add(sqlName);
      this.#sqlPrepared.set(client, prepared);
    }
    return `EXECUTE ${sqlName}(${literals.join(', ')})`;
  }
}

/**
 * A parameter as a SQL literal: strings through node-postgres' own escaping, bytes as hex, numbers and
 * booleans as they are. Anything else (NaN, a Date, an object) has no literal here: the statement then
 * goes out alone, with the extended protocol.
 */
function toLiteral(value: unknown): string | undefined {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') return pg.escapeLiteral(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : undefined;
  if (typeof value === 'bigint') return String(value);
  if (value instanceof Uint8Array) return `decode('${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}', 'hex')`;
  return undefined;
}

type Listener = (payload: string) => void;

/** Pause between attempts to LISTEN again after the listening connection was lost. */
const RELISTEN_DELAY_MS = 1_000;

class PgDatabase implements SqlDatabase {
  readonly #pool: Pool;
  readonly #statements: Statements;
  readonly #listeners = new Map<string, Set<Listener>>();
  #listenClient: Promise<Client> | undefined;
  #relistening = false;
  #closed = false;

  constructor(pool: Pool, statements: Statements) {
    this.#pool = pool;
    this.#statements = statements;
  }

  query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    return this.#pool.query(this.#statements.config(text, params)) as unknown as Promise<SqlResult<Row>>;
  }

  /** BEGIN goes out with the transaction's first statement (see PgTransaction), not on its own. */
  async begin(prelude?: string): Promise<SqlTransaction> {
    const client = await this.#pool.connect();
    // pg-pool removes its own error listener from a checked-out client: a connection lost during the
    // transaction would emit an unhandled 'error' and crash the process. The loss surfaces instead as
    // the failure of the transaction's next query (or of its COMMIT), which the middleware answers.
    client.on('error', ignoreConnectionError);
    return new PgTransaction(client, this.#statements, prelude === undefined ? 'BEGIN' : `BEGIN;\n${prelude}`);
  }

  async listen(channel: string, onNotify: Listener): Promise<Unsubscribe> {
    const client = await this.#connectListener();
    let callbacks = this.#listeners.get(channel);
    if (!callbacks) {
      callbacks = new Set();
      this.#listeners.set(channel, callbacks);
      await client.query(`LISTEN ${quoteChannel(channel)}`);
    }
    callbacks.add(onNotify);
    return async () => {
      callbacks.delete(onNotify);
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#listenClient;
    this.#listenClient = undefined;
    if (pending) await pending.then((client) => client.end()).catch(() => undefined);
  }

  #connectListener(): Promise<Client> {
    if (this.#closed) return Promise.reject(new Error('the database adapter is closed'));
    this.#listenClient ??= this.#openListener().catch((error: unknown) => {
      this.#listenClient = undefined;
      throw error;
    });
    return this.#listenClient;
  }

  /** Subscribes every known channel again on a new connection, retrying while Postgres is unreachable. */
  #relisten(): void {
    if (this.#relistening) return;
    this.#relistening = true;
    const attempt = async () => {
      if (this.#closed || this.#listeners.size === 0) {
        this.#relistening = false;
        return;
      }
      try {
        const client = await this.#connectListener();
        for (const channel of this.#listeners.keys()) await client.query(`LISTEN ${quoteChannel(channel)}`);
        this.#relistening = false;
      } catch {
        setTimeout(() => void attempt(), RELISTEN_DELAY_MS).unref();
      }
    };
    void attempt();
  }

  async #openListener(): Promise<Client> {
    // pg-pool keeps the Client class and the connection options it was built with.
    const { Client: ClientClass, options } = this.#pool as unknown as { Client: new (options: unknown) => Client; options: unknown };
    const client = new ClientClass(options);
    client.on('notification', (message) => {
      for (const callback of this.#listeners.get(message.channel) ?? []) callback(message.payload ?? '');
    });
    client.on('error', () => {
      // The connection is gone: forget it and LISTEN again on a new one, or waiters would never be woken
      // again (each would wait out its full waitMs). Until then they fall back to their timeout.
      this.#listenClient = undefined;
      client.end().catch(() => undefined);
      this.#relisten();
    });
    await client.connect();
    return client;
  }
}

/**
 * A transaction on one pooled client, in as few round trips as the protocol allows. node-postgres sends
 * a parameterless query as ONE simple query, several statements and all, but a statement with parameters
 * needs the extended protocol, which carries one statement only. So:
 * - BEGIN (and the prelude) goes out with the first statement: as `BEGIN; <statement>` when it has no
 *   parameters, as `BEGIN; EXECUTE <prepared>(<literals>)` when it is one of the store's prepared
 *   statements, else on its own just ahead of it;
 * - commitWith() sends `EXECUTE <prepared>(<literals>); COMMIT` the same way.
 * In transactional mode that makes the claim and the completion ride on the BEGIN and the COMMIT a
 * handler's own transaction needs anyway.
 */
class PgTransaction implements SqlTransaction {
  readonly #client: PoolClient;
  readonly #statements: Statements;
  /** BEGIN, and the prelude after it. */
  readonly #begin: string;
  /** BEGIN sent on its own (settles when it has run); undefined until then or when it went with a statement. */
  #beginning: Promise<unknown> | undefined;
  #begun = false;
  #done = false;

  constructor(client: PoolClient, statements: Statements, begin: string) {
    this.#client = client;
    this.#statements = statements;
    this.#begin = begin;
  }

  async query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    if (this.#done) throw new Error('the transaction has ended');
    if (!this.#begun) {
      const statement = params === undefined || params.length === 0 ? text : await this.#statements.inline(this.#client, text, params);
      if (statement !== undefined) {
        this.#begun = true;
        // One result per statement comes back; the caller's statement is the last.
        return lastResult(await this.#client.query(`${this.#begin};\n${statement}`));
      }
    }
    this.#beginAlone();
    await this.#beginning;
    return this.#client.query(this.#statements.config(text, params)) as unknown as Promise<SqlResult<Row>>;
  }

  /**
   * The underlying `pg.PoolClient`, for handlers that want node-postgres itself (or a query builder on
   * it). Whatever is sent on it directly is queued behind the transaction's BEGIN.
   */
  get client(): PoolClient {
    this.#beginAlone();
    return this.#client;
  }

  async commit(): Promise<void> {
    await this.#end('COMMIT');
  }

  async commitWith<Row>(text: string, params: unknown[] = []): Promise<SqlResult<Row>> {
    if (this.#done) throw new Error('the transaction has ended');
    const statement = this.#begun ? await this.#statements.inline(this.#client, text, params) : undefined;
    if (statement === undefined) {
      const result = await this.query<Row>(text, params);
      await this.commit();
      return result;
    }
    await this.#beginning;
    // A failing statement aborts the transaction and the server skips the COMMIT after it.
    return firstResult(await this.#end(`${statement};\nCOMMIT`));
  }

  async rollback(): Promise<void> {
    await this.#end('ROLLBACK');
  }

  /** Queues BEGIN on the client, ahead of anything sent after it; its failure surfaces at the next await. */
  #beginAlone(): void {
    if (this.#begun) return;
    this.#begun = true;
    this.#beginning = this.#client.query(this.#begin);
    this.#beginning.catch(() => undefined);
  }

  /** Sends the statement that ends the transaction and releases the client; returns what it answered. */
  async #end(statement: string): Promise<unknown> {
    if (this.#done) return undefined;
    this.#done = true;
    try {
      // Nothing sent yet means no transaction is open on the server: nothing to end.
      let result: unknown;
      if (this.#begun) {
        await this.#beginning;
        result = await this.#client.query(statement);
      }
      this.#client.off('error', ignoreConnectionError);
      this.#client.release();
      return result;
    } catch (error) {
      // A connection whose transaction state is unknown must never go back to the pool.
      this.#client.off('error', ignoreConnectionError);
      this.#client.release(error as Error);
      throw error;
    }
  }
}

function lastResult<Row>(results: unknown): SqlResult<Row> {
  return (Array.isArray(results) ? results[results.length - 1] : results) as SqlResult<Row>;
}

function firstResult<Row>(results: unknown): SqlResult<Row> {
  return (Array.isArray(results) ? results[0] : results) as SqlResult<Row>;
}

function ignoreConnectionError(): void {}

/** Channel names are identifiers; ours are built from validated identifiers only, quoted anyway. */
function quoteChannel(channel: string): string {
  return `"${channel.replaceAll('"', '""')}"`;
}

export type { SqlQueryable };
