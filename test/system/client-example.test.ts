import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql } from '../../examples/payments/app.js';
import { LEDGER_DEADLINE_MS, LEDGER_MAX_ATTEMPTS } from '../../examples/payments/ledger-client.js';
import { startLedger, type LedgerProcess } from '../../examples/payments/ledger-process.js';
import { freePort } from '../../examples/shared/free-port.js';
import { databaseTargets, DATABASE_URL, type TestDatabase } from '../helpers/databases.js';
import { postJson, serve } from '../helpers/http.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * The example's payments → ledger call, made with idempotentFetch, against the real ledger service in its own
 * process (started as `npm start` starts it, on the Postgres server of the run) with a TCP proxy in between
 * that the test uses to break the network. The end client sends each payment once and must get its 201;
 * the ledger must hold exactly one entry per payment, whatever the network did.
 */

const PAYMENT = { amount: 1250, currency: 'EUR' };

describe('payments calling the ledger through a faulty network', () => {
  let ledger: LedgerProcess;
  let ledgerUrl: string;
  let proxy: TcpProxy;
  let database: TestDatabase;
  let payments: Awaited<ReturnType<typeof serve>>;

  beforeAll(async () => {
    const [paymentsPort, ledgerPort, ledgerMetricsPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL,
      DOWNSTREAM_PORT: String(ledgerPort),
      DOWNSTREAM_PROMETHEUS_PORT: String(ledgerMetricsPort),
      // fork() reuses vitest's execArgv, which has no TypeScript loader: the ledger gets tsx this way.
      NODE_OPTIONS: [process.env.NODE_OPTIONS, '--import tsx'].filter(Boolean).join(' '),
    };
    delete env.DOWNSTREAM_URL;
    delete env.PGLITE_DIR;
    delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
    ledger = startLedger(paymentsPort, env);
    [ledgerUrl, database] = await Promise.all([ledger.ready, databaseTargets()[0]!.open('client_example')]);
    proxy = await startTcpProxy({ host: '127.0.0.1', port: ledgerPort });
    for (const statement of paymentsSchemaSql(database.schema).split(';\n')) await database.sql.query(statement);
    const app = createPaymentsApp({ store: await database.store(), sql: database.sql, schema: database.schema, ledgerUrl: `http://127.0.0.1:${proxy.port}` });
    app.silent = true;
    payments = await serve(app);
  }, 90_000);

  afterAll(async () => {
    await payments?.close();
    await proxy?.close();
    await ledger?.stop();
    await database?.close();
  });

  /** The ledger's own view of an account, asked directly (not through the proxy). */
  async function ledgerEntries(account: string): Promise<Array<{ amount: number }>> {
    const response = await fetch(`${ledgerUrl}/entries`, { headers: { authorization: `Bearer ${account}` } });
    return (await response.json()) as Array<{ amount: number }>;
  }

  async function paymentsOf(account: string): Promise<unknown[]> {
    const response = await fetch(`${payments.url}/payments`, { headers: { authorization: `Bearer ${account}` } });
    return (await response.json()) as unknown[];
  }

  it('a ledger whose first two connections are cut costs the end client latency only, and books one entry', async () => {
    const account = `acct_cut_${Date.now()}`;
    proxy.reset();
    const cutsBefore = proxy.counts.cut;
    // Two faults in a row: each connection carrying the entry is cut before the ledger sees a byte of it.
    const twoCuts = proxy.cutWhen('POST /entries', 'before').then(() => proxy.cutWhen('POST /entries', 'before'));

    const answer = await postJson(`${payments.url}/payments`, PAYMENT, { key: 'pay-1', account });
    await twoCuts;

    expect(answer.status).toBe(201);
    expect(JSON.parse(answer.text)).toMatchObject({ ...PAYMENT, status: 'succeeded' });
    expect(proxy.counts.cut - cutsBefore).toBe(2);
    expect(await ledgerEntries(account)).toMatchObject([{ amount: PAYMENT.amount }]);
    expect(await paymentsOf(account)).toHaveLength(1);

    // The end client's own retry is a replay: no second payment, no second entry.
    const again = await postJson(`${payments.url}/payments`, PAYMENT, { key: 'pay-1', account });
    expect([again.status, again.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
    expect(again.text).toBe(answer.text);
    expect(await ledgerEntries(account)).toHaveLength(1);
  });

  it('a ledger answer lost after the entry was sent is retried with the same key: still one entry', async () => {
    const account = `acct_lost_${Date.now()}`;
    proxy.reset();
    // The ledger gets the request (and may book it); payments never hears back. Whether or not it was
    // booked, the retry carries the same derived key: the ledger books it, or replays the booking.
    const cut = proxy.cutWhen('POST /entries', 'after');

    const answer = await postJson(`${payments.url}/payments`, PAYMENT, { key: 'pay-lost', account });
    await cut;

    expect(answer.status).toBe(201);
    expect(await ledgerEntries(account)).toHaveLength(1);
    expect(await paymentsOf(account)).toHaveLength(1);
  });

  it("a ledger that stays unreachable costs a bounded wait and a 503; the end client's retry books one entry", async () => {
    const account = `acct_down_${Date.now()}`;
    proxy.reset();
    proxy.refuse();
    proxy.cutAll(); // payments keeps its connections to the ledger alive: the outage takes them too
    const refusedBefore = proxy.counts.refused;

    const startedMs = performance.now();
    const failed = await postJson(`${payments.url}/payments`, PAYMENT, { key: 'pay-down', account });
    const waitedMs = performance.now() - startedMs;

    expect(failed.status).toBe(503);
    expect(JSON.parse(failed.text)).toMatchObject({ type: 'urn:payments-example:problem:ledger-unavailable' });
    expect(failed.text).toContain(`${LEDGER_MAX_ATTEMPTS} attempt(s)`);
    expect(proxy.counts.refused - refusedBefore).toBe(LEDGER_MAX_ATTEMPTS);
    expect(waitedMs).toBeLessThan(LEDGER_DEADLINE_MS);
    expect(await ledgerEntries(account)).toEqual([]);

    proxy.pass();
    const retried = await postJson(`${payments.url}/payments`, PAYMENT, { key: 'pay-down', account });
    expect(retried.status).toBe(201);
    expect(await ledgerEntries(account)).toHaveLength(1);
    expect(await paymentsOf(account)).toHaveLength(1);
  });
});
