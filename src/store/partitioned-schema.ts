import { quoteIdentifier } from './identifiers.js';
import { keyLockExpression, qualified, recordColumnsSql, type TableName } from './schema.js';

/**
 * The schema of a records table partitioned by creation time, for volumes where deleting expired rows
 * one by one costs too much WAL: expiry drops whole partitions instead (see partition-maintenance.ts).
 *
 * Postgres requires every unique constraint of a partitioned table to include the partition key, so the
 * primary key is (scope, key, created_at) and no constraint keeps (scope, key) unique across partitions.
 * The claim function below keeps it unique instead: it serialises the claims of one key with a
 * transaction-scoped advisory lock and, holding it, looks for the key in every partition.
 */

/** Name of the catch-all partition: rows whose creation time has no partition of its own land there. */
export function defaultPartition(name: TableName): TableName {
  return { schema: name.schema, table: `${name.table}_default` };
}

/** The fence sequence of the claim function (the plain table's claims draw random fences instead). */
function sequenceName({ schema, table }: TableName): string {
  return `${quoteIdentifier(schema)}.${quoteIdentifier(`${table}_fence_seq`)}`;
}

/** The claim function's qualified name. */
export function claimFunction(name: TableName): string {
  return `${quoteIdentifier(name.schema)}.${quoteIdentifier(`${name.table}_claim`)}`;
}

/** The migration, one statement per entry (the function body holds semicolons, so it cannot be split on them). */
export function partitionedSchemaStatements(name: TableName): string[] {
  const table = qualified(name);
  return [
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(name.schema)}`,
    `CREATE SEQUENCE IF NOT EXISTS ${sequenceName(name)}`,
    `CREATE TABLE IF NOT EXISTS ${table} (
${recordColumnsSql()},
  PRIMARY KEY (scope, key, created_at)
) PARTITION BY RANGE (created_at)`,
    `CREATE INDEX IF NOT EXISTS ${quoteIdentifier(`${name.table}_expires_at_idx`)} ON ${table} (expires_at)`,
    `CREATE TABLE IF NOT EXISTS ${qualified(defaultPartition(name))} PARTITION OF ${table} DEFAULT`,
    claimFunctionSql(name),
  ];
}

/**
 * The claim, as a VOLATILE plpgsql function so that it stays ONE statement for the caller while each
 * statement inside it takes a fresh snapshot (READ COMMITTED): after the advisory lock is granted, the
 * lookup sees every claim of the key committed by the lock's previous holder.
 *
 * 1. Read first, without a lock: a live record that holds the key answers a duplicate (replay, 409, 422)
 *    without a lock or a write, as in the unpartitioned claim.
 * 2. Otherwise take the key's advisory lock; `p_wait = false` (transactional mode) returns
 *    acquired = false at once instead of waiting for another transaction's whole handler.
 * 3. Look again, locking the row: none → insert into the current partition; expired → delete and insert
 *    afresh (the row moves to the current partition, and a late writer of the old row finds nothing);
 *    lapsed lease of the same request → take over in place; anything else stands in the way.
 *
 * As in the plain table, an expired record counts as absent even under a live lease (lease renewal keeps
 * `expires_at` ahead of the lease), so a partition whose records have all expired can be dropped whole.
 */
function claimFunctionSql(name: TableName): string {
  const table = qualified(name);
  const sequence = sequenceName(name).replaceAll("'", "''");
  const free = (row: string) =>
    `${row}.expires_at <= now() OR (${row}.status = 'in_progress' AND ${row}.lease_expires_at <= now() AND split_part(${row}.fingerprint, ' ', 1) = split_part(p_fingerprint, ' ', 1))`;
  return `CREATE OR REPLACE FUNCTION ${claimFunction(name)}(
  p_scope text, p_key text, p_fingerprint text, p_fingerprint_version smallint,
  p_lease_ms float8, p_ttl_seconds float8, p_correlation_id text, p_traceparent text, p_wait boolean
) RETURNS TABLE (acquired boolean, claimed boolean, rec ${table})
LANGUAGE plpgsql VOLATILE
AS $claim$
DECLARE
  v_row ${table};
  v_fence bigint;
  v_lock_key bigint := ${keyLockExpression(name, 'p_scope', 'p_key')};
  v_lease_expires_at timestamptz := now() + make_interval(secs => p_lease_ms / 1000);
  v_expires_at timestamptz := now() + make_interval(secs => p_ttl_seconds);
BEGIN
  SELECT * INTO v_row FROM ${table} r WHERE r.scope = p_scope AND r.key = p_key;
  IF FOUND AND NOT (${free('v_row')}) THEN
    RETURN QUERY SELECT true, false, v_row;
    RETURN;
  END IF;

  IF p_wait THEN
    PERFORM pg_advisory_xact_lock(v_lock_key);
  ELSIF NOT pg_try_advisory_xact_lock(v_lock_key) THEN
    RETURN QUERY SELECT false, NULL::boolean, NULL::${table};
    RETURN;
  END IF;

  SELECT * INTO v_row FROM ${table} r WHERE r.scope = p_scope AND r.key = p_key FOR UPDATE;
  IF FOUND AND NOT (${free('v_row')}) THEN
    RETURN QUERY SELECT true, false, v_row;
    RETURN;
  END IF;

  -- Drawn here, on the node running the function: Citus refuses a volatile call inside an UPDATE of a
  -- distributed table, and the sequence exists on that node only (docs/scale-out.md).
  v_fence := nextval('${sequence}');
  IF FOUND AND v_row.status = 'in_progress' AND v_row.expires_at > now() THEN
    UPDATE ${table} r SET
      fingerprint_version = p_fingerprint_version,
      fence = v_fence,
      attempt = r.attempt + 1,
      lease_expires_at = v_lease_expires_at,
      expires_at = v_expires_at,
      correlation_id = p_correlation_id,
      traceparent = p_traceparent
    WHERE r.scope = p_scope AND r.key = p_key AND r.created_at = v_row.created_at
    RETURNING * INTO v_row;
  ELSE
    IF FOUND THEN
      DELETE FROM ${table} r WHERE r.scope = p_scope AND r.key = p_key AND r.created_at = v_row.created_at;
    END IF;
    INSERT INTO ${table} (scope, key, fingerprint, fingerprint_version, status, fence, attempt,
        lease_expires_at, expires_at, correlation_id, traceparent)
      VALUES (p_scope, p_key, p_fingerprint, p_fingerprint_version, 'in_progress', v_fence, 1,
        v_lease_expires_at, v_expires_at, p_correlation_id, p_traceparent)
      RETURNING * INTO v_row;
  END IF;
  RETURN QUERY SELECT true, true, v_row;
END
$claim$`;
}
