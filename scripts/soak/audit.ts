import type { SqlDatabase } from '../../src/entries/postgres.js';

/** One payment a soak client makes, under its own key, retried until it has a final answer. */
export interface Operation {
  key: string;
  account: string;
  body: { amount: number; currency: string };
  /** The payment id of the final answer, once there is one. */
  paymentId?: string;
  finalText?: string;
}

/**
 * Every operation that got a final 201 must own exactly one payment row, and no row may belong to no
 * operation: a lost operation is a 201 with no row; a doubled one is a row no final answer names.
 */
export async function auditPayments(sql: SqlDatabase, schema: string, operations: Operation[]) {
  const { rows } = await sql.query<{ id: string }>(`SELECT id::text AS id FROM "${schema}".payments`);
  const inDatabase = new Set(rows.map((row) => row.id));
  const answered = new Set(operations.flatMap((operation) => (operation.paymentId ? [operation.paymentId] : [])));
  const lost = [...answered].filter((id) => !inDatabase.has(id)).length;
  const doubled = [...inDatabase].filter((id) => !answered.has(id)).length;
  const unresolved = operations.filter((operation) => operation.finalText === undefined).length;
  const { rows: stuck } = await sql.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM "${schema}".idempotency_records WHERE status = 'in_progress' AND lease_expires_at <= now()`,
  );
  return { lost, doubled, stuckRecords: Number(stuck[0]?.n ?? 0), errors: unresolved > 0 ? [`${unresolved} operations never got a final answer`] : [] };
}
