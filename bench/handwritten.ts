import { createHash, randomBytes } from 'node:crypto';
import type Koa from 'koa';
import type pg from 'pg';

/**
 * The physical reference for the library's cost: the leanest code an expert would write by hand for the same
 * guarantee (one execution per key, the response replayed), behind the same app stack, with raw SQL on a table
 * of its own holding nothing the guarantee does not need: the key, a 32-byte digest of the request, the fence
 * (lease mode only), the response, and `created_at` (written once, by its default) for a retention sweep. No
 * index beyond the key, so the completion's UPDATE changes no indexed column and stays a HOT update.
 * Each request claims its key with `INSERT … ON CONFLICT DO NOTHING`, runs the handler, and stores the response
 * with one `UPDATE`; a key already taken is answered from a `SELECT` (replay, 409 or 422). What it leaves out
 * is what the library adds: takeover of a lapsed lease, waiting duplicates, telemetry, the replay cache, header
 * filtering, a faithful copy of every response. Its statements go out one after the other, as most code is written.
 *
 * - `handwritten`: claim and completion inside the business transaction (what transactional mode does);
 *   the handler writes through `ctx.state.transaction`.
 * - `handwrittenLease`: claim and completion each committed on their own around the handler's own
 *   transaction, the completion fenced by a random token (what lease mode does).
 */
export type HandwrittenMode = 'transactional' | 'lease';

export function handwritten(mode: HandwrittenMode, pool: pg.Pool, schema: string): Koa.Middleware {
  const table = `"${schema}".handwritten_keys`;
  const claim = `INSERT INTO ${table} (key, fingerprint, fence) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`;
  // The transaction's own claim row cannot be anyone else's: no fence needed to find it.
  const complete =
    mode === 'lease'
      ? `UPDATE ${table} SET response_status = $3, response_body = $4 WHERE key = $1 AND fence = $2`
      : `UPDATE ${table} SET response_status = $2, response_body = $3 WHERE key = $1`;
  const existing = `SELECT fingerprint, response_status, response_body FROM ${table} WHERE key = $1`;

  return async (ctx, next) => {
    const key = ctx.get('Idempotency-Key');
    if (ctx.method !== 'POST' || !key) {
      await next();
      return;
    }
    const fingerprint = createHash('sha256')
      .update(`${ctx.method} ${ctx.path}\n${JSON.stringify(ctx.request.body)}`)
      .digest();
    const body = () => Buffer.from(JSON.stringify(ctx.body));

    if (mode === 'lease') {
      const fence = BigInt.asIntN(64, randomBytes(8).readBigUInt64BE()).toString();
      const claimed = await pool.query(claim, [key, fingerprint, fence]);
      if (claimed.rowCount === 0) return answerExisting(ctx, pool, existing, key, fingerprint);
      try {
        await next();
      } catch (error) {
        await pool.query(`DELETE FROM ${table} WHERE key = $1 AND fence = $2`, [key, fence]);
        throw error;
      }
      await pool.query(complete, [key, fence, ctx.status, body()]);
      return;
    }

    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const claimed = await client.query(claim, [key, fingerprint, null]);
      if (claimed.rowCount === 0) {
        await client.query('ROLLBACK');
        return await answerExisting(ctx, pool, existing, key, fingerprint);
      }
      ctx.state.transaction = client;
      await next();
      await client.query(complete, [key, ctx.status, body()]);
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
async function answerExisting(ctx: Koa.Context, pool: pg.Pool, statement: string, key: string, fingerprint: Buffer): Promise<void> {
  const { rows } = await pool.query<{ fingerprint: Buffer; response_status: number | null; response_body: Buffer | null }>(statement, [key]);
  const record = rows[0];
  if (record && !record.fingerprint.equals(fingerprint)) {
    ctx.status = 422;
  } else if (record?.response_status != null) {
    ctx.status = record.response_status;
    ctx.type = 'application/json';
    ctx.body = record.response_body;
  } else {
    ctx.status = 409;
  }
}
