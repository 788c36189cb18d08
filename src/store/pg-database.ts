import type { Client, Pool, PoolClient } from 'pg';
import type { SqlDatabase, SqlQueryable, SqlResult, SqlTransaction, Unsubscribe } from './sql-database.js';

/**
 * Adapts a node-postgres `Pool`. LISTEN needs a session of its own that stays open (a transaction-pooling
 * PgBouncer cannot hold one), so the adapter opens ONE extra connection with the pool's own settings the
 * first time something listens, instead of pinning one of the pool's clients forever.
 */
export function fromPgPool(pool: Pool): SqlDatabase {
  return new PgDatabase(pool);
}

type Listener = (payload: string) => void;

class PgDatabase implements SqlDatabase {
  readonly #pool: Pool;
  readonly #listeners = new Map<string, Set<Listener>>();
  #listenClient: Promise<Client> | undefined;
  #closed = false;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    return this.#pool.query(text, params) as unknown as Promise<SqlResult<Row>>;
  }

  async begin(): Promise<SqlTransaction> {
    const client = await this.#pool.connect();
    // pg-pool removes its own error listener from a checked-out client: a connection lost during the
    // transaction would emit an unhandled 'error' and crash the process. The loss surfaces instead as
    // the failure of the transaction's next query (or of its COMMIT), which the middleware answers.
    client.on('error', ignoreConnectionError);
    try {
      await client.query('BEGIN');
    } catch (error) {
      client.off('error', ignoreConnectionError);
      client.release(error as Error);
      throw error;
    }
    return new PgTransaction(client);
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

  async #openListener(): Promise<Client> {
    // pg-pool keeps the Client class and the connection options it was built with.
    const { Client: ClientClass, options } = this.#pool as unknown as { Client: new (options: unknown) => Client; options: unknown };
    const client = new ClientClass(options);
    client.on('notification', (message) => {
      for (const callback of this.#listeners.get(message.channel) ?? []) callback(message.payload ?? '');
    });
    client.on('error', () => {
      // The connection is gone: forget it; the next listen() reconnects, and waiters fall back to their timeout.
      this.#listenClient = undefined;
      this.#listeners.clear();
      client.end().catch(() => undefined);
    });
    await client.connect();
    return client;
  }
}

class PgTransaction implements SqlTransaction {
  readonly #client: PoolClient;
  #done = false;

  constructor(client: PoolClient) {
    this.#client = client;
  }

  query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    return this.#client.query(text, params) as unknown as Promise<SqlResult<Row>>;
  }

  /** The underlying `pg.PoolClient`, for handlers that want node-postgres itself (or a query builder on it). */
  get client(): PoolClient {
    return this.#client;
  }

  async commit(): Promise<void> {
    await this.#end('COMMIT');
  }

  async rollback(): Promise<void> {
    await this.#end('ROLLBACK');
  }

  async #end(statement: string): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    try {
      await this.#client.query(statement);
      this.#client.off('error', ignoreConnectionError);
      this.#client.release();
    } catch (error) {
      // A connection whose transaction state is unknown must never go back to the pool.
      this.#client.off('error', ignoreConnectionError);
      this.#client.release(error as Error);
      throw error;
    }
  }
}

function ignoreConnectionError(): void {}

/** Channel names are identifiers; ours are built from validated identifiers only, quoted anyway. */
function quoteChannel(channel: string): string {
  return `"${channel.replaceAll('"', '""')}"`;
}

export type { SqlQueryable };
