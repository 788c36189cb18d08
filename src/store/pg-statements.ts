import { createHash } from 'node:crypto';
import { diag } from '@opentelemetry/api';
import { sqlstateOf } from '../error-code.js';
import type { Pool, PoolClient, QueryConfig } from 'pg';
import type { NamedStatement } from './primitives/statement.js';
import type { SqlResult } from './sql-database.js';

/**
 * SQLSTATEs of a named statement that a transaction-pooling PgBouncer older than 1.21 sent to another
 * server connection than the one that prepared it: 26000 (it does not exist there) and 42P05 (another
 * client prepared the same name there already).
 */
const PREPARED_STATEMENT_LOST = new Set(['26000', '42P05']);

/** node-postgres reads `queryMode` (since 8.14); @types/pg does not declare it yet. */
type PgQueryConfig = QueryConfig & { queryMode?: 'extended' };

type QueryCallback = (error: Error | null, result: unknown) => void;

/** node-postgres' own `Query` (lib/query.js), the fields set here after it normalised its text and values. */
interface PgQuery {
  name?: string;
  queryMode?: 'extended';
  values?: unknown[];
  callback?: QueryCallback;
}
type PgQueryClass = new (text: string, values?: unknown[]) => PgQuery;

/** Turns a text and its parameters into a node-postgres query on a pool or one of its clients, named when the text is a prepared one. */
export class Statements {
  readonly #pool: Pool;
  /** node-postgres' JavaScript `Query` of the pool's clients (each is a `pool.Client`), or undefined for another (the native bindings). */
  readonly #Query: PgQueryClass | undefined;
  /** The prepared statements' names by text. */
  readonly #prepared = new Map<string, string>();
  #warned = false;

  constructor(pool: Pool, prepared: Iterable<string | NamedStatement>) {
    this.#pool = pool;
    this.#Query = queryClassOf((pool as { Client?: unknown }).Client);
    for (const statement of prepared) {
      if (typeof statement === 'string') this.#prepared.set(statement, preparedName(statement));
      else this.#prepared.set(statement.text, preparedName(statement.text, statement.name));
    }
  }

  /**
   * Runs the statement on `client` (`oneStatement`: refusing a text of several); the failure of a named one
   * that a pooler lost says what to change, once.
   */
  run<Row>(client: Pool | PoolClient, text: string, params: unknown[] | undefined, oneStatement = false): Promise<SqlResult<Row>> {
    const name = this.#prepared.get(text);
    // The extended protocol runs one statement per text: a simple query runs them all, so a text such as
    // "INSERT …; ROLLBACK; INSERT …" would end the claim's transaction and write outside it.
    const extended = name === undefined && oneStatement;
    const result = this.#submit(client, text, params, name, extended) as Promise<SqlResult<Row>>;
    if (name === undefined) return result;
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

  /**
   * Hands node-postgres a `Query` it need not copy. Given a config object, it copies the object's own
   * properties descriptor by descriptor into a new one (utils.js cloneQueryConfig) before building the same
   * `Query`, and that copy cost more than the rest of building it; given a text it builds `{ text }`. So the
   * query is built from the text, then named or set to the extended protocol. The clients' own `Query` class
   * keeps a pipelined client's check that a submitted query is no cursor. A client with another `Query` (the
   * native bindings) gets the config object.
   */
  #submit(client: Pool | PoolClient, text: string, params: unknown[] | undefined, name: string | undefined, extended: boolean): Promise<unknown> {
    const pool = client === this.#pool;
    // A client whose `query` was wrapped on the instance may expect the promise a config gets, not the
    // `Query` node-postgres returns for one: it gets the config.
    const Query = pool || !Object.hasOwn(client, 'query') ? this.#Query : undefined;
    if (Query === undefined) {
      const config: PgQueryConfig = { text, values: (extended ? (params ?? []) : params) as QueryConfig['values'] };
      if (name !== undefined) config.name = name;
      if (extended) config.queryMode = 'extended';
      return client.query(config);
    }
    const query = new Query(text, params);
    if (name !== undefined) query.name = name;
    else if (extended) {
      query.queryMode = 'extended';
      query.values ??= [];
    }
    // pg-pool sets the callback that releases its client: one set here would keep that client checked out.
    if (pool) return client.query(query as never);
    return new Promise((resolve, reject) => {
      query.callback = (error, result) => (error ? reject(error) : resolve(result));
      client.query(query as never);
    });
  }
}

/** The JavaScript client's `Query` (node-postgres exports it as `Client.Query`), or undefined. */
function queryClassOf(clientClass: unknown): PgQueryClass | undefined {
  const Query = (clientClass as { Query?: { prototype?: { requiresPreparation?: unknown; submit?: unknown } } } | undefined)?.Query;
  return typeof Query?.prototype?.requiresPreparation === 'function' && typeof Query.prototype.submit === 'function' ? (Query as unknown as PgQueryClass) : undefined;
}

/**
 * A prepared statement's name: its primitive's, if any (it names the statement in pg_prepared_statements and
 * in a trace's pg.query spans), and a digest of its text, so that the same statement gets the same name on
 * every connection and two stores on different tables never collide. 63 bytes at most (NAMEDATALEN).
 */
function preparedName(text: string, primitive?: string): string {
  const digest = createHash('sha256').update(text).digest('hex');
  return primitive === undefined ? `koa_idempotency_${digest.slice(0, 24)}` : `koa_idempotency_${primitive}_${digest.slice(0, 16)}`;
}
