import type { Client, Pool, QueryResult } from 'pg';
import type { NamedStatement } from './primitives/statement.js';
import type { SqlDatabase, SqlQueryable, SqlResult, SqlTransaction, Unsubscribe } from './sql-database.js';
import { ignoreConnectionError, PgTransaction } from './pg-transaction.js';
import { Statements } from './pg-statements.js';

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
  return new PgDatabase(pool, new Statements(pool, options.preparedStatements ?? []));
}

/** The PostgresStore's adapter: its primitives prepared under their own names (store-primitives.ts). */
export function fromPgPoolPreparing(pool: Pool, primitives: Iterable<NamedStatement>): SqlDatabase {
  return new PgDatabase(pool, new Statements(pool, primitives));
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

/** Channel names are identifiers; ours are built from validated identifiers only, quoted anyway. */
function quoteChannel(channel: string): string {
  return `"${channel.replaceAll('"', '""')}"`;
}

export type { SqlQueryable };
