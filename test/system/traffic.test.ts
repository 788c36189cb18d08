import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPaymentsApp, paymentsSchemaSql } from '../../examples/payments/app.js';
import { main, type Io } from '../../scripts/traffic.js';
import type { TrafficReport } from '../../scripts/traffic/report.js';
import { SCENARIOS } from '../../scripts/traffic/scenarios.js';
import { fromPGlite, PostgresStore } from '../../src/entries/postgres.js';

/** Runs the generator's command line in-process and captures what it prints. */
async function traffic(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: Io = { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text), interactive: false };
  const code = await main(args, {}, io);
  return { code, stdout, stderr };
}

describe('demo:traffic against the payments example on PGlite', () => {
  let pglite: PGlite;
  let store: PostgresStore;
  let server: Server;
  let url: string;
  /** The server's own count of the replays it sent (`Idempotent-Replayed: true`). */
  let replaysServed = 0;

  beforeAll(async () => {
    pglite = await PGlite.create();
    store = new PostgresStore({ pglite });
    await store.migrate();
    for (const statement of paymentsSchemaSql().split(';\n')) await pglite.query(statement);
    const app = createPaymentsApp({ store, sql: fromPGlite(pglite) });
    app.silent = true;
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    server.on('request', (_req, res) => {
      res.on('close', () => {
        if (res.getHeader('idempotent-replayed') === 'true') replaysServed++;
      });
    });
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    await store?.close();
    await pglite?.close();
  });

  it('reports outcomes that match what the server did', async () => {
    const run = await traffic(['--url', url, '--count', String(SCENARIOS.length * 2), '--concurrency', '3', '--json']);
    const report = JSON.parse(run.stdout) as TrafficReport;

    expect(report.unexpected).toEqual([]);
    expect(run.code).toBe(0);
    expect(report.scenarios).toBe(SCENARIOS.length * 2);
    const { rows } = await pglite.query<{ payments: number }>('SELECT count(*)::int AS payments FROM payments');
    // One payment per key that got a 201, even where the client timed out and only saw the replay.
    expect(rows[0]!.payments).toBe(report.keysWithPayment);
    // ... and one stored 201 per payment: every key executed once, whatever its clients saw.
    const { rows: records } = await pglite.query<{ executed: number }>(
      `SELECT count(*)::int AS executed FROM idempotency_records WHERE status = 'completed' AND response_status = 201`,
    );
    expect(records[0]!.executed).toBe(rows[0]!.payments);
    // The server sent every replay the client counted; any extra one went to a request whose client had
    // already given up (a timed-out first attempt that reached the server after its retry had executed).
    const timeouts = report.outcomes.filter((outcome) => outcome.answer === 'client timeout').reduce((sum, outcome) => sum + outcome.requests, 0);
    await vi.waitFor(() => expect(replaysServed).toBeGreaterThanOrEqual(report.replays));
    expect(replaysServed - report.replays).toBeLessThanOrEqual(timeouts);
    expect(report.replays).toBeGreaterThanOrEqual(2); // at least the two 'replay' scenarios
  });

  it('counts each scenario by answer: 422 for a changed payload, two executions for two tenants', async () => {
    const run = await traffic(['--url', url, '--count', String(SCENARIOS.length), '--json']);
    const report = JSON.parse(run.stdout) as TrafficReport;
    const count = (scenario: string, answer: string) => report.outcomes.find((o) => o.scenario === scenario && o.answer === answer)?.requests ?? 0;
    expect(count('payload-mismatch', '422')).toBe(1);
    expect(count('two-tenants-same-key', '201')).toBe(2);
    expect(count('replay', '201 replayed')).toBe(1);
    expect(count('first-try', '201')).toBe(1);
    const requests = report.outcomes.reduce((sum, outcome) => sum + outcome.requests, 0);
    expect(requests).toBe(report.requests);
  });

  it('prints the outcome table and progress lines', async () => {
    const run = await traffic(['--url', url, '--count', String(SCENARIOS.length)]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^scenario\s+runs\s+201\s+201 replayed\s+.*as expected$/m);
    for (const scenario of SCENARIOS) expect(run.stdout).toMatch(new RegExp(`^${scenario}\\s+1\\s.*\\s1/1$`, 'm'));
    expect(run.stdout).toContain(`${SCENARIOS.length} of ${SCENARIOS.length} scenarios behaved as an idempotent API must.`);
    expect(run.stderr).toMatch(/^\[6\/6 scenarios\] \d+ requests, 0 unexpected$/m);
  });

  it('refuses a server that is not on this machine (exit 2)', async () => {
    const run = await traffic(['--url', 'http://example.com:3000']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('must be an http URL on this machine');
  });

  it('says how to start the example when nothing listens (exit 3)', async () => {
    const run = await traffic(['--url', 'http://127.0.0.1:1', '--count', '1']);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain('Start it with `npm start`');
  });

  it('exits 2 on a bad flag', async () => {
    const run = await traffic(['--count', 'lots']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--count must be a positive integer');
  });
});
