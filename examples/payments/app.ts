import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { randomUUID } from 'node:crypto';
import { idempotency, type IdempotencyStore, type SqlQueryable } from '../../src/index.js';
import { type SqlDatabase } from '../../src/entries/postgres.js';
import { bearerAuth } from '../shared/bearer-auth.js';
import { readMoney } from '../shared/money.js';
import { respondProblem } from '../shared/problem.js';
import { problemErrors } from '../shared/problem-errors.js';
import { bookLedgerEntry } from './ledger-client.js';

/**
 * A small payments API. The caller is `Authorization: Bearer <account>` (a demo: the token IS the
 * account id), which is also the idempotency scope. `POST /payments` runs in transactional mode: the
 * payment row and the stored response commit together.
 */
export interface PaymentsAppOptions {
  store: IdempotencyStore;
  sql: SqlDatabase;
  /** Schema holding the `payments` table (validated by the caller). @default 'public' */
  schema?: string;
  /** Called inside POST /payments after the payment row is written (tests use it to inject faults). */
  afterInsert?: (payment: Payment) => void | Promise<void>;
  /** Options passed through to the idempotency middleware. */
  idempotency?: Partial<Parameters<typeof idempotency>[0]>;
  /**
   * Base URL of the ledger service (`examples/ledger`). When set, POST /payments books a ledger entry
   * there, with a key derived from the payment's, before writing the payment.
   * @default undefined (no ledger call)
   */
  ledgerUrl?: string;
}

export interface Payment {
  id: string;
  amount: number;
  currency: string;
  status: 'succeeded';
}

export function paymentsSchemaSql(schema = 'public'): string {
  return `CREATE SCHEMA IF NOT EXISTS "${schema}";
CREATE TABLE IF NOT EXISTS "${schema}".payments (
  id         uuid        PRIMARY KEY,
  account    text        NOT NULL,
  amount     integer     NOT NULL CHECK (amount > 0),
  currency   char(3)     NOT NULL,
  status     text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
)`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function createPaymentsApp(options: PaymentsAppOptions): Koa {
  const table = `"${options.schema ?? 'public'}".payments`;
  const app = new Koa();
  const router = new Router();

  router.post(
    '/payments',
    idempotency({
      store: options.store,
      required: true,
      transactional: true,
      scope: (ctx) => ctx.state.account as string,
      ...options.idempotency,
    }),
    async (ctx) => {
      const input = parsePaymentInput(ctx.request.body);
      if ('problem' in input) {
        return respondProblem(ctx, { type: 'urn:payments-example:problem:invalid-payment', title: 'Invalid payment', status: 400, detail: input.problem });
      }
      if (options.ledgerUrl && ctx.idempotency) {
        const booking = await bookLedgerEntry(options.ledgerUrl, ctx.state.account as string, ctx.idempotency, input);
        if (!booking.booked) {
          // A 5xx is not stored: the key is released, and the retry books the same ledger entry (same derived key).
          ctx.set('Retry-After', '1');
          return respondProblem(ctx, {
            type: 'urn:payments-example:problem:ledger-unavailable',
            title: 'Ledger unavailable',
            status: 503,
            detail: `${booking.reason}; retry with the same Idempotency-Key.`,
          });
        }
      }
      const payment: Payment = { id: randomUUID(), amount: input.amount, currency: input.currency, status: 'succeeded' };
      const db: SqlQueryable = ctx.idempotency?.db ?? options.sql;
      await db.query(`INSERT INTO ${table} (id, account, amount, currency, status) VALUES ($1, $2, $3, $4, $5)`, [
        payment.id,
        ctx.state.account,
        payment.amount,
        payment.currency,
        payment.status,
      ]);
      await options.afterInsert?.(payment);
      ctx.status = 201;
      ctx.set('Location', `/payments/${payment.id}`);
      ctx.body = payment;
    },
  );

  router.get('/payments/:id', async (ctx) => {
    // Only a UUID can name a payment; anything else (a NUL byte included, which Postgres text refuses) is a 404.
    const id = UUID.test(ctx.params.id ?? '') ? ctx.params.id : undefined;
    const { rows } = id
      ? await options.sql.query<Payment>(`SELECT id, amount, currency, status FROM ${table} WHERE id::text = $1 AND account = $2`, [id, ctx.state.account])
      : { rows: [] };
    if (!rows[0]) {
      return respondProblem(ctx, { type: 'about:blank', title: 'Not Found', status: 404, detail: 'No such payment for this account.' });
    }
    ctx.body = rows[0];
  });

  router.get('/payments', async (ctx) => {
    const { rows } = await options.sql.query<Payment>(`SELECT id, amount, currency, status FROM ${table} WHERE account = $1 ORDER BY created_at, id`, [
      ctx.state.account,
    ]);
    ctx.body = rows;
  });

  app.use(problemErrors());
  app.use(bearerAuth);
  app.use(bodyParser({ enableTypes: ['json'], jsonLimit: '64kb' }));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

function parsePaymentInput(body: unknown): { amount: number; currency: string } | { problem: string } {
  const money = readMoney(body);
  if ('problem' in money) return money;
  const { amount, currency } = money;
  if (typeof currency !== 'string' || !/^[A-Za-z]{3}$/.test(currency)) return { problem: '`currency` must be a 3-letter code.' };
  return { amount, currency: currency.toUpperCase() };
}
