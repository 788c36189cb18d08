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

/**
 * The ledger: the downstream service the payments API calls during `POST /payments`, so a trace crosses
 * two services. It uses the idempotency middleware too: payments sends a key derived from its own
 * (`ctx.idempotency.headers('ledger-entry')`), so a retried payment books its entry once. Its spans
 * carry the payments request's correlation ID, which arrives in W3C baggage.
 */
export interface LedgerAppOptions {
  store: IdempotencyStore;
  sql: SqlDatabase;
  /** Schema holding the `entries` table (validated by the caller). @default 'ledger' */
  schema?: string;
}

export interface LedgerEntry {
  id: string;
  amount: number;
  currency: string;
}

export const DEFAULT_LEDGER_SCHEMA = 'ledger';

export function ledgerSchemaSql(schema = DEFAULT_LEDGER_SCHEMA): string {
  return `CREATE SCHEMA IF NOT EXISTS "${schema}";
CREATE TABLE IF NOT EXISTS "${schema}".entries (
  id         uuid        PRIMARY KEY,
  account    text        NOT NULL,
  amount     integer     NOT NULL CHECK (amount > 0),
  currency   char(3)     NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
)`;
}

export function createLedgerApp(options: LedgerAppOptions): Koa {
  const table = `"${options.schema ?? DEFAULT_LEDGER_SCHEMA}".entries`;
  const app = new Koa();
  const router = new Router();

  router.post(
    '/entries',
    idempotency({
      store: options.store,
      required: true,
      transactional: true,
      scope: (ctx) => ctx.state.account as string,
      // Only the payments API calls the ledger: its baggage comes from inside the trust boundary, so the
      // ledger adopts the payment's correlation ID rather than computing one from its derived key.
      telemetry: { trustInboundCorrelationId: true },
    }),
    async (ctx) => {
      const input = parseEntryInput(ctx.request.body);
      if ('problem' in input) {
        return respondProblem(ctx, { type: 'urn:ledger-example:problem:invalid-entry', title: 'Invalid entry', status: 400, detail: input.problem });
      }
      const entry: LedgerEntry = { id: randomUUID(), ...input };
      const db: SqlQueryable = ctx.idempotency?.db ?? options.sql;
      await db.query(`INSERT INTO ${table} (id, account, amount, currency) VALUES ($1, $2, $3, $4)`, [entry.id, ctx.state.account, entry.amount, entry.currency]);
      ctx.status = 201;
      ctx.body = entry;
    },
  );

  router.get('/entries', async (ctx) => {
    const { rows } = await options.sql.query<LedgerEntry>(`SELECT id, amount, currency FROM ${table} WHERE account = $1 ORDER BY created_at, id`, [ctx.state.account]);
    ctx.body = rows;
  });

  app.use(problemErrors());
  app.use(bearerAuth);
  app.use(bodyParser({ enableTypes: ['json'], jsonLimit: '16kb' }));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

function parseEntryInput(body: unknown): { amount: number; currency: string } | { problem: string } {
  const money = readMoney(body);
  if ('problem' in money) return money;
  const { amount, currency } = money;
  if (typeof currency !== 'string' || !/^[A-Z]{3}$/.test(currency)) return { problem: '`currency` must be a 3-letter upper-case code.' };
  return { amount, currency };
}
