import { createHash } from 'node:crypto';
import { diag } from '@opentelemetry/api';
import { sqlstateOf } from '../error-code.js';
import type { Client, Pool, PoolClient, QueryConfig, QueryResult } from 'pg';
import type { SqlDatabase, SqlQueryable, SqlResult, SqlTransaction, Unsubscribe } from './sql-database.js';
import { assertNoTransactionControl } from './transaction-control.js';

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

/**
 * SQLSTATEs of a named statement that a transaction-pooling PgBouncer older than 1.21 sent to another
 * server connection than the one that prepared it: 26000 (it does not exist there) and 42P05 (another
 * client prepared the same name there already).
 */
const PREPARED_STATEMENT_LOST = new Set(['26000', '42P05']);

/** node-postgres reads `queryMode` (since 8.14); @types/pg does not declare it yet. */
type PgQueryConfig = QueryConfig & { queryMode?: 'extended' };

/** Turns a text and its parameters into a node-postgres query, named when the text is a prepared one. */
class Statements {
  readonly #names = new Map<string, string>();
  #warned = false;

  constructor(prepared: Iterable<string>) {
    for (const text of prepared) {
      // A name derived from the text: the same statement gets the same name on every connection, and
      // two stores on different tables never collide.
      this.#names.set(text, `koa_idempotency_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`);
    }
  }

  #config(text: string, params: unknown[] | undefined, oneStatement: boolean): PgQueryConfig {
    const name = this.#names.get(text);
    if (name !== undefined) return { name, text, values: params as QueryConfig['values'] };
    // The extended protocol runs one statement per text: a simple query runs them all, so a text such as
    // "INSERT …; ROLLBACK; INSERT …" would end the claim's transaction and write outside it.
    return oneStatement ? { text, values: (params ?? []) as QueryConfig['values'], queryMode: 'extended' } : { text, values: params as QueryConfig['values'] };
  }

  /**
   * Runs the statement on `client` (`oneStatement`: refusing a text of several); the failure of a named one
   * that a pooler lost says what to change, once.
   */
  run<Row>(client: Pool | PoolClient, text: string, params: unknown[] | undefined, oneStatement = false): Promise<SqlResult<Row>> {
    const config = this.#config(text, params, oneStatement);
    const result = client.query(config) as unknown as Promise<SqlResult<Row>>;
    if (config.name === undefined) return result;
    return result.catch((error: unknown) => {
      const code = sqlstateOf(error);
      if (code !== undefined && PREPARED_STATEMENT_LOST.has(code) && !this.#warned) {
        this.#warned = true;
        diag.warn(
          `koa-idempotency: a prepared statement of the store failed with SQLSTATE ${code}: a transaction-pooling PgBouncer older than 1.21 ` +
            'runs each transaction on any server connection and cannot carry prepared statements; set preparedStatements: false on the PostgresStore',
        );
      }
      throw error;
    });
  }
}

type Listener = (payload: string) => void;

/** Pause between attempts to LISTEN again after the listening connection was lost. */
const RELISTEN_DELAY_MS = 1_000;

class PgDatabase implements SqlDatabase {
  readonly #pool: Pool;
  readonly #statements: Statements;
  readonly #listeners = new Map<string, Set<Listener>>();
  /** Told when the listening connection was replaced (see SqlDatabase.listen). */
  readonly #onReconnect = new Set<() => void>();
  #listenClient: Promise<Client> | undefined;
  /** The statements of the listening session, one at a time (node-postgres deprecates overlapping queries on a client). */
  #listenerTurn: Promise<unknown> = Promise.resolve();
  #relistening = false;
  #closed = false;

  constructor(pool: Pool, statements: Statements) {
    this.#pool = pool;
    this.#statements = statements;
  }

  query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    return this.#statements.run(this.#pool, text, params);
  }

  /** BEGIN goes out with the transaction's first statement (see PgTransaction), not on its own. */
  async begin(): Promise<SqlTransaction> {
    const client = await this.#pool.connect();
    // pg-pool removes its own error listener from a checked-out client: a connection lost during the
    // transaction would emit an unhandled 'error' and crash the process. The loss surfaces instead as
    // the failure of the transaction's next query (or of its COMMIT), which the middleware answers.
    client.on('error', ignoreConnectionError);
    return new PgTransaction(client, this.#statements);
  }

  async listen(channel: string, onNotify: Listener, onReconnect?: () => void): Promise<Unsubscribe> {
    const client = await this.#connectListener();
    let callbacks = this.#listeners.get(channel);
    if (!callbacks) {
      callbacks = new Set();
      this.#listeners.set(channel, callbacks);
      await this.#onListener(client, `LISTEN ${quoteChannel(channel)}`);
    }
    callbacks.add(onNotify);
    if (onReconnect) this.#onReconnect.add(onReconnect);
    return async () => {
      callbacks.delete(onNotify);
      if (onReconnect) this.#onReconnect.delete(onReconnect);
    };
  }

  async queryOnListener<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    const client = await this.#connectListener();
    const { rows, rowCount } = await this.#onListener(client, text, params);
    return { rows: rows as Row[], rowCount };
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#listenClient;
    this.#listenClient = undefined;
    if (pending) await pending.then((client) => client.end()).catch(() => undefined);
  }

  /** Runs a statement on the listening session after the ones before it; a failed one does not hold up the next. */
  #onListener(client: Client, text: string, params?: unknown[]): Promise<QueryResult> {
    const result = this.#listenerTurn.then(() => client.query(text, params));
    this.#listenerTurn = result.catch(() => undefined);
    return result;
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
        for (const channel of this.#listeners.keys()) await this.#onListener(client, `LISTEN ${quoteChannel(channel)}`);
        this.#relistening = false;
        for (const onReconnect of this.#onReconnect) onReconnect();
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
      // The connection is gone: forget it and LISTEN again on a new one, then tell the subscribers (their
      // announcements went with the old session). Until then waiters learn of changes by re-reading.
      this.#listenClient = undefined;
      client.end().catch(() => undefined);
      this.#relisten();
    });
    // No lock_timeout: nothing on this session ever waits for a lock (a waiter's announcement only tries
    // its lock), since one statement in a lock wait would hold up every waiter of the process.
    await client.connect();
    return client;
  }
}

/**
 * A transaction on one pooled client. BEGIN costs a round trip of its own unless it travels with the
 * first statement: a statement without parameters goes out as the simple-query `BEGIN; <statement>`, one
 * round trip (node-postgres sends a parameterless query as one simple query, several statements and all).
 * A first statement with parameters needs the extended protocol, which carries one statement only, so
 * BEGIN then goes ahead of it on its own.
 */
class PgTransaction implements SqlTransaction {
  readonly #client: PoolClient;
  readonly #statements: Statements;
  /** BEGIN sent on its own (settles when it has run); undefined until then or when it went with a statement. */
  #beginning: Promise<unknown> | undefined;
  #begun = false;
  #done = false;
  /** The session lost what node-postgres believes of it: never to be reused. */
  #broken = false;

  constructor(client: PoolClient, statements: Statements) {
    this.#client = client;
    this.#statements = statements;
  }

  async query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    if (this.#done) throw new Error('the transaction has ended');
    // Only commit() and rollback() end it: a COMMIT sent here would commit whatever ran so far on its own.
    assertNoTransactionControl(text);
    if (!this.#begun && (params === undefined || params.length === 0)) {
      this.#begun = true;
      const results = (await this.#client.query(`BEGIN;\n${text}`)) as unknown as SqlResult<Row> | Array<SqlResult<Row>>;
      // One result per statement comes back; the caller's statement is the last.
      return Array.isArray(results) ? results[results.length - 1]! : results;
    }
    this.#beginAlone();
    await this.#beginning;
    return this.#statements.run<Row>(this.#client, text, params, true).catch((error: unknown) => {
      // The store's named statements are gone from this session (a handler's DEALLOCATE inside a DO block,
      // which no keyword check sees), while node-postgres still believes them prepared: every later claim on
      // the connection would fail. It is destroyed at the end instead of going back to the pool.
      if (sqlstateOf(error) === PREPARED_STATEMENT_MISSING) this.#broken = true;
      throw error;
    });
  }

  async commit(): Promise<void> {
    await this.#end('COMMIT');
  }

  async rollback(): Promise<void> {
    await this.#end('ROLLBACK');
  }

  /** Sends BEGIN on its own; its failure surfaces at the next await. */
  #beginAlone(): void {
    if (this.#begun) return;
    this.#begun = true;
    this.#beginning = this.#client.query('BEGIN');
    this.#beginning.catch(() => undefined);
  }

  async #end(statement: string): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    try {
      // Nothing sent yet means no transaction is open on the server: nothing to end.
      if (this.#begun) {
        await this.#beginning;
        await this.#client.query(`${statement}; ${SESSION_CLEANUP}`);
      }
      this.#client.off('error', ignoreConnectionError);
      this.#client.release(this.#broken ? new Error('its prepared statements were deallocated') : undefined);
    } catch (error) {
      // A connection whose transaction state is unknown must never go back to the pool.
      this.#client.off('error', ignoreConnectionError);
      this.#client.release(error as Error);
      throw error;
    }
  }
}

function ignoreConnectionError(): void {}

/** SQLSTATE invalid_sql_statement_name: a named statement that node-postgres prepared is not in the session. */
const PREPARED_STATEMENT_MISSING = '26000';

/**
 * Sent with COMMIT or ROLLBACK: what a handler could leave on the session through a function or a DO block, which
 * no keyword check sees (session advisory locks, LISTENs, cursors WITH HOLD, temporary tables), is dropped before
 * the pool gets the connection back. Not settings: RESET ALL would undo what the pool set on connect.
 */
const SESSION_CLEANUP = 'SELECT pg_advisory_unlock_all(); UNLISTEN *; CLOSE ALL; DISCARD TEMP';

/** Channel names are identifiers; ours are built from validated identifiers only, quoted anyway. */
function quoteChannel(channel: string): string {
  return `"${channel.replaceAll('"', '""')}"`;
}

export type { SqlQueryable };
