import type { SqlDatabase, SqlResult, SqlTransaction, Unsubscribe } from './sql-database.js';
import { assertNoTransactionControl } from './transaction-control.js';

/** A PGlite query's result, as the store reads it. */
interface PGliteResults<Row> {
  rows: Row[];
  affectedRows?: number;
}

/** What the store uses of a PGlite transaction. */
export interface PGliteTransactionLike {
  query<Row>(text: string, params?: unknown[]): Promise<PGliteResults<Row>>;
  exec(text: string): Promise<Array<PGliteResults<unknown>>>;
  rollback(): Promise<void>;
}

/**
 * What the store uses of a PGlite instance (`PGliteLike` of `@electric-sql/pglite` fits it). A structural
 * type, so that the store's declarations compile for users without PGlite, an optional peer dependency.
 */
export interface PGliteLike {
  query<Row>(text: string, params?: unknown[]): Promise<PGliteResults<Row>>;
  transaction<T>(callback: (tx: PGliteTransactionLike) => Promise<T>): Promise<T>;
  listen(channel: string, callback: (payload: string) => void): Promise<() => Promise<void>>;
}

/**
 * Adapts an embedded PGlite (WASM Postgres) instance. PGlite is a single connection: while a
 * transaction is open, its own mutex makes every other query wait, which is exactly the isolation a
 * pool would give, at the price of running one transaction at a time.
 */
export function fromPGlite(db: PGliteLike): SqlDatabase {
  return new PGliteDatabase(db);
}

class PGliteDatabase implements SqlDatabase {
  readonly #db: PGliteLike;

  constructor(db: PGliteLike) {
    this.#db = db;
  }

  async query<Row>(text: string, params?: unknown[]): Promise<SqlResult<Row>> {
    return toResult(await this.#db.query<Row>(text, params));
  }

  async begin(): Promise<SqlTransaction> {
    // PGlite only offers callback transactions; keep the callback open until commit() or rollback().
    let end!: (action: 'commit' | 'rollback') => void;
    const ended = new Promise<'commit' | 'rollback'>((resolve) => (end = resolve));
    let opened!: (tx: PGliteTransactionLike) => void;
    const ready = new Promise<PGliteTransactionLike>((resolve) => (opened = resolve));
    const finished = this.#db.transaction(async (tx) => {
      opened(tx);
      if ((await ended) === 'rollback') await tx.rollback();
      else await tx.exec(DROP_TRANSACTION_LEFTOVERS);
    });
    const tx = await Promise.race([ready, finished.then(() => Promise.reject(new Error('PGlite transaction ended before it opened')))]);
    let begun = false;
    return {
      severalStatementsFirst: true,
      async query<Row>(text: string, params?: unknown[]) {
        // Only commit() and rollback() end it: a COMMIT sent here would commit whatever ran so far on its own.
        assertNoTransactionControl(text);
        // The first statement, without parameters, may be several in one text, as node-postgres sends it (one
        // simple query with BEGIN); every later one is a single statement, as there.
        const first = !begun;
        begun = true;
        if (first && (params === undefined || params.length === 0)) {
          return toResult<Row>(((await tx.exec(text)).at(-1) ?? { rows: [] }) as unknown as { rows: Row[] });
        }
        return toResult(await tx.query<Row>(text, params));
      },
      async commit() {
        end('commit');
        await finished;
      },
      async rollback() {
        end('rollback');
        await finished.catch(() => undefined);
      },
    };
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<Unsubscribe> {
    const unlisten = await this.#db.listen(channel, onNotify);
    return async () => {
      await unlisten();
    };
  }

  async close(): Promise<void> {
    // The PGlite instance belongs to the caller, like a pg.Pool does.
  }
}

/**
 * Runs last in a transaction that commits. PGlite is one session, shared by every later request and by the store,
 * so what a handler's transaction creates that outlives a COMMIT would reach them: a temporary table left behind
 * (no ON COMMIT DROP) takes the place of a business table of the same name in every later request's writes,
 * which would then vanish with the session; a cursor declared WITH HOLD keeps its name taken. Only what this
 * transaction created goes: a temporary relation whose catalog row this transaction (or one of its
 * subtransactions, whose IDs come after its own) wrote, which age() puts at 0 or below (it counts from this
 * transaction's ID, across a wrap of the counter), and a cursor declared since it began. What the application
 * made before stays (PGlite's live queries are temporary views). Each drop is a subtransaction of its own, so a
 * relation that cannot be dropped (trigger events still pending on it) stays rather than fail the COMMIT.
 */
const DROP_TRANSACTION_LEFTOVERS = `DO $koa_idempotency$
DECLARE
  leftover record;
  held refcursor;
BEGIN
  FOR leftover IN
    SELECT c.oid::regclass::text AS name, c.relkind FROM pg_catalog.pg_class c
    WHERE c.relnamespace = pg_catalog.pg_my_temp_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND pg_catalog.age(c.xmin) <= 0
  LOOP
    BEGIN
      EXECUTE pg_catalog.format('DROP %s IF EXISTS %s CASCADE',
        CASE leftover.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
          WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, leftover.name);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  FOR leftover IN SELECT name FROM pg_catalog.pg_cursors WHERE is_holdable AND creation_time >= pg_catalog.now() LOOP
    held := leftover.name;
    CLOSE held;
  END LOOP;
END $koa_idempotency$`;

function toResult<Row>(result: { rows: Row[]; affectedRows?: number }): SqlResult<Row> {
  return { rows: result.rows, rowCount: result.affectedRows ?? result.rows.length };
}
