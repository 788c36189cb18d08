import { createHash, randomBytes } from 'node:crypto';
import type Koa from 'koa';
import type pg from 'pg';

/**
 * The physical reference for the library's cost: the same job done by hand, with inline SQL on the same
 * records table and no library. Each request claims its key with `INSERT … ON CONFLICT DO NOTHING`, runs
 * the handler, and stores the response with one `UPDATE`; a key already taken is answered from a `SELECT`
 * (replay, 409 or 422). What it leaves out is what the library adds: takeover of a lapsed lease, waiting
 * duplicates, telemetry, the replay cache, header filtering, a faithful copy of every response.
 *
 * - `handwritten`: claim and completion inside the business transaction (what transactional mode does);
 *   the handler writes through `ctx.state.transaction`.
 * - `handwrittenLease`: claim and completion each committed on their own around the handler's own
 *   transaction, the completion fenced by a random token (what lease mode does).
 */
export type HandwrittenMode = 'transactional' | 'lease';

const TTL = `now() + interval '24 hours'`;
const LEASE = `now() + interval '30 seconds'`;

export function handwritten(mode: HandwrittenMode, pool: pg.Pool, schema: string): Koa.Middleware {
  const table = `"${schema}".idempotency_records`;
  const claim = `INSERT INTO ${table} (scope, key, fingerprint, fingerprint_version, status, fence, lease_expires_at, expires_at)
VALUES ('', $1, $2, 1, 'in_progress', $3, ${LEASE}, ${TTL}) ON CONFLICT (scope, key) DO NOTHING`;
  const complete = `UPDATE ${table} SET status = 'completed', completed_at = now(), lease_expires_at = NULL, replayable = true,
  response_status = $3, response_headers = $4, response_body = $5
WHERE scope = '' AND key = $1 AND fence = $2`;
  const existing = `SELECT status, fingerprint, response_status, response_body FROM ${table} WHERE scope = '' AND key = $1`;

  return async (ctx, next) => {
    const key = ctx.get('Idempotency-Key');
    if (ctx.method !== 'POST' || !key) {
      await next();
      return;
    }
    const fingerprint = createHash('sha256')
      .update(`${ctx.method} ${ctx.path}\n${JSON.stringify(ctx.request.body)}`)
      .digest('hex');
    const fence = mode === 'lease' ? BigInt.asIntN(64, randomBytes(8).readBigUInt64BE()).toString() : '0';
    const completion = () => [key, fence, ctx.status, JSON.stringify({ 'content-type': ctx.response.type }), Buffer.from(JSON.stringify(ctx.body))];

    if (mode === 'lease') {
      const claimed = await pool.query(claim, [key, fingerprint, fence]);
      if (claimed.rowCount === 0) return answerExisting(ctx, pool, existing, key, fingerprint);
      try {
        await next();
      } catch (error) {
        await pool.query(`DELETE FROM ${table} WHERE scope = '' AND key = $1 AND fence = $2`, [key, fence]);
        throw error;
      }
      await pool.query(complete, completion());
      return;
    }

    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const claimed = await client.query(claim, [key, fingerprint, fence]);
      if (claimed.rowCount === 0) {
        await client.query('ROLLBACK');
        return await answerExisting(ctx, pool, existing, key, fingerprint);
      }
      ctx.state.transaction = client;
      await next();
      await client.query(complete, completion());
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  };
}

/** The key is taken: replay the stored response, or 409 while it runs, or 422 for another payload. */
async function answerExisting(ctx: Koa.Context, pool: pg.Pool, statement: string, key: string, fingerprint: string): Promise<void> {
  const { rows } = await pool.query<{ status: string; fingerprint: string; response_status: number | null; response_body: Buffer | null }>(statement, [key]);
  const record = rows[0];
  if (record && record.fingerprint !== fingerprint) {
    ctx.status = 422;
  } else if (record?.status === 'completed' && record.response_status !== null) {
    ctx.status = record.response_status;
    ctx.type = 'application/json';
    ctx.body = record.response_body;
  } else {
    ctx.status = 409;
  }
}
