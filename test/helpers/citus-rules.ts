import type { SqlDatabase, SqlQueryable, SqlTransaction } from '../../src/entries/postgres.js';

/**
 * The rules Citus applies to a statement on a distributed table (its router planner, Citus 13.2), checked on
 * SQL text so that CI needs no Citus cluster (docs/scale-out.md). Function volatility comes from the real
 * catalog (pg_proc), the most volatile overload of a name counting. Operators are not seen: a rule broken by
 * a STABLE operator inside ON CONFLICT DO UPDATE only shows on a real cluster.
 */

/** pg_proc.provolatile: immutable, stable, volatile. */
export type Volatility = 'i' | 's' | 'v';
export type VolatilityOf = ReadonlyMap<string, Volatility>;

/** The most volatile overload of every function name in pg_proc. */
export async function catalogVolatility(db: SqlQueryable): Promise<VolatilityOf> {
  const { rows } = await db.query<{ name: string; volatility: Volatility }>(`SELECT proname AS name, max(provolatile) AS volatility FROM pg_proc GROUP BY proname`);
  return new Map(rows.map((row) => [row.name, row.volatility]));
}

/** What is wrong with `text` on a distributed table; empty when nothing is. */
export function citusViolations(text: string, volatility: VolatilityOf): string[] {
  const sql = withoutLiterals(text);
  const violations: string[] = [];
  const called = (region: string, level: Volatility[]) => functionsIn(region, volatility).filter((name) => level.includes(volatility.get(name)!));
  for (const region of regions(sql, /\b(?<!\bDO\s+)(?<!\bFOR\s+)(?<!\bKEY\s+)(UPDATE|DELETE)\b/gi)) {
    const volatile = called(region, ['v']);
    if (volatile.length > 0) violations.push(`VOLATILE function in an UPDATE or DELETE: ${volatile.join(', ')}`);
  }
  for (const region of regions(sql, /\bDO\s+UPDATE\b/gi)) {
    const mutable = called(region.split(/\bRETURNING\b/i)[0]!, ['s', 'v']);
    if (mutable.length > 0) violations.push(`non-IMMUTABLE function in ON CONFLICT DO UPDATE SET/WHERE: ${mutable.join(', ')}`);
  }
  for (const region of regions(sql, /\bINSERT\b/gi)) {
    if (/\bDO\s+NOTHING\b/i.test(region) && !/\bRETURNING\b/i.test(region))
      violations.push('INSERT ... ON CONFLICT DO NOTHING without RETURNING: Citus reports a wrong row count');
  }
  // Citus keeps a MATERIALIZED step as an intermediate result, which cannot hold a void column (pg_notify's).
  for (const [, body] of sql.matchAll(/\bAS\s+MATERIALIZED\s*\(([\s\S]*?)\n\)/gi)) {
    if (/\bpg_notify\s*\(/i.test(body!) && !/\)::text\s+AS\b/i.test(body!)) violations.push('pg_notify() in a MATERIALIZED step without a cast: a void column');
  }
  // One key (the store's $1 and $2, or the claim function's arguments) is one shard, where Citus allows row locks.
  if (/\bFOR\s+(NO\s+KEY\s+)?(UPDATE|SHARE)\b/i.test(sql) && !/\bscope\s*=\s*(\$1|p_scope)\s+AND\s+(r\.)?key\s*=\s*(\$2|p_key)\b/i.test(sql)) {
    violations.push('FOR UPDATE/SHARE over more than one key: refused across shards');
  }
  if (/\block_timeout\b/i.test(text) && !/SET LOCAL citus\.propagate_set_commands = 'local'; SET LOCAL lock_timeout\b/i.test(text)) {
    violations.push('lock_timeout set without SET LOCAL citus.propagate_set_commands: it would not reach the shards');
  }
  const modifyingCte = /\bAS\s+(MATERIALIZED\s+)?\(\s*(UPDATE|DELETE)\b/i.test(sql);
  if (modifyingCte && called(outerQuery(sql), ['v']).length > 0 && !/\bpg_catalog\.\w+/i.test(outerQuery(sql))) {
    violations.push('a volatile call (NOTIFY, advisory lock) over an UPDATE/DELETE CTE runs on the worker, not where the listeners are');
  }
  return violations;
}

const CITUS_PROBE = /FROM pg_catalog\.pg_extension WHERE extname = 'citus'\) AS citus$/;

/**
 * A database that refuses, as Citus would (SQLSTATE 0A000), every statement breaking a rule, and records the
 * text of each statement it was sent, refused or not.
 */
export function citusGate(db: SqlDatabase, volatility: VolatilityOf): { db: SqlDatabase; sent: Map<string, string[]> } {
  const sent = new Map<string, string[]>();
  const check = (text: string): void => {
    const violations = citusViolations(text, volatility);
    sent.set(text, violations);
    if (violations.length > 0) throw Object.assign(new Error(violations.join('; ')), { code: '0A000' });
  };
  const gated: SqlDatabase = {
    async query<Row>(text: string, params?: unknown[]) {
      // The store asks once whether the citus extension is there (src/store/citus-probe.ts): behind the gate it is,
      // so the store sends what it sends to Citus.
      if (CITUS_PROBE.test(text)) return { rows: [{ citus: true }] as Row[], rowCount: 1 };
      check(text);
      return db.query<Row>(text, params);
    },
    async begin(): Promise<SqlTransaction> {
      const tx = await db.begin();
      return {
        async query<Row>(text: string, params?: unknown[]) {
          check(text);
          return tx.query<Row>(text, params);
        },
        commit: () => tx.commit(),
        rollback: () => tx.rollback(),
      };
    },
    listen: (channel, onNotify, onReconnect) => db.listen(channel, onNotify, onReconnect),
    close: () => db.close(),
  };
  if (db.queryOnListener) {
    const onListener = db.queryOnListener.bind(db);
    gated.queryOnListener = async <Row>(text: string, params?: unknown[]) => {
      check(text);
      return onListener<Row>(text, params);
    };
  }
  return { db: gated, sent };
}

function withoutLiterals(text: string): string {
  return text.replace(/'(?:[^']|'')*'/g, "''").replace(/--[^\n]*/g, '');
}

/** Names called as functions in `sql` that the catalog knows (keywords before a parenthesis are not in it). */
function functionsIn(sql: string, volatility: VolatilityOf): string[] {
  const names = [...sql.matchAll(/\b([a-z_][a-z0-9_]*)\s*\(/gi)].map((match) => match[1]!.toLowerCase());
  return [...new Set(names.filter((name) => volatility.has(name)))];
}

/** From each match of `start` to the end of its statement: the closing parenthesis of its level, or the end. */
function regions(sql: string, start: RegExp): string[] {
  return [...sql.matchAll(start)].map((match) => sql.slice(match.index, endOfLevel(sql, match.index)));
}

function endOfLevel(sql: string, from: number): number {
  let depth = 0;
  for (let at = from; at < sql.length; at++) {
    if (sql[at] === '(') depth++;
    else if ((sql[at] === ')' && depth-- === 0) || (sql[at] === ';' && depth === 0)) return at;
  }
  return sql.length;
}

/** The statement without what is inside its top-level parentheses (CTE bodies): its opening ones kept, for calls. */
function outerQuery(sql: string): string {
  let depth = 0;
  let outer = '';
  for (const char of sql) {
    if (depth === 0) outer += char;
    if (char === '(') depth++;
    if (char === ')') depth--;
  }
  return outer;
}
