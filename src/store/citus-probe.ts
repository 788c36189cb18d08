import type { SqlQueryable } from './sql-database.js';

/**
 * Whether the database has the citus extension, asked once per store (and again after a failed attempt, so a
 * database down at the first claim is not taken for plain Postgres). On Citus the lock timeouts are sent as
 * SET LOCAL, which reaches the shards (transaction-control.ts); elsewhere as one set_config() statement, which
 * every adapter runs, the extended protocol's one-statement texts included.
 */
export class CitusProbe {
  readonly #db: SqlQueryable;
  #answer: Promise<boolean> | undefined;

  constructor(db: SqlQueryable) {
    this.#db = db;
  }

  isCitus(): Promise<boolean> {
    this.#answer ??= this.#db.query<{ citus: boolean }>(`SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') AS citus`).then(
      ({ rows }) => rows[0]?.citus === true,
      (error: unknown) => {
        this.#answer = undefined;
        throw error;
      },
    );
    return this.#answer;
  }
}
