import type pg from 'pg';

export interface BurstResult {
  bursts: number;
  concurrency: number;
  /** Handler executions beyond the first, summed over all bursts. */
  duplicateExecutions: number;
  /** Bursts in which the handler ran more than once. */
  burstsWithDuplicates: number;
}

/**
 * Sends `bursts` rounds of `concurrency` identical requests (one key per round) all at once, then counts
 * the business rows written per key: every row beyond the first is an operation executed twice.
 */
export async function measureDuplicates(options: {
  url: string;
  pool: pg.Pool;
  schema: string;
  label: string;
  bursts: number;
  concurrency: number;
}): Promise<BurstResult> {
  const prefix = `burst-${options.label}-${Date.now().toString(36)}`;
  for (let burst = 0; burst < options.bursts; burst++) {
    const key = `${prefix}-${burst}`;
    await Promise.all(
      Array.from({ length: options.concurrency }, () =>
        fetch(`${options.url}/orders`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key },
          body: '{"amount":100}',
        }).then((response) => response.arrayBuffer()),
      ),
    );
  }
  const { rows } = await options.pool.query<{ executions: number }>(`SELECT count(*)::int AS executions FROM "${options.schema}".orders WHERE key LIKE $1 GROUP BY key`, [
    `${prefix}-%`,
  ]);
  return {
    bursts: options.bursts,
    concurrency: options.concurrency,
    duplicateExecutions: rows.reduce((sum, row) => sum + row.executions - 1, 0),
    burstsWithDuplicates: rows.filter((row) => row.executions > 1).length,
  };
}
