import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStore, type Completion, type Lease } from '../../src/index.js';
import { createTestApp } from '../helpers/app.js';
import { signal, until } from '../helpers/events.js';
import { postJson, serve } from '../helpers/http.js';

/**
 * Black-box attack on lease mode's completion: after the handler ran, a completion that fails for a moment
 * (a dropped connection) is retried after 250 ms, then 500 ms (lease.ts). The lease must stay alive across
 * those retries: renewal stopped as the completion began, so a lease shorter than the retries lapsed in
 * between, and a duplicate took the key over and ran the operation a second time, while the first request's
 * retried completion was fenced (503). Driven through the public store contract: a MemoryStore whose first
 * complete() fails, as a store on a flaky network does.
 */

class FirstCompletionFails extends MemoryStore {
  readonly failed = signal();
  #failures = 0;

  override async complete(lease: Lease, completion: Completion): Promise<void> {
    if (this.#failures++ === 0) {
      this.failed.fire();
      throw new Error('connection reset (injected)');
    }
    return super.complete(lease, completion);
  }
}

describe('lease mode: a completion retried after a transient failure', () => {
  const servers: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((server) => server.close()));
  });

  it('keeps its lease while it retries: a duplicate meanwhile is answered from the first request (409 or its replay), never run a second time', async () => {
    const store = new FirstCompletionFails();
    const { app, executions } = createTestApp({ store, options: { leaseMs: 100 } });
    const server = await serve(app);
    servers.push(server);
    const url = `${server.url}/orders`;

    const first = postJson(url, { amount: 1 }, { key: 'flaky-completion', account: 'a' });
    await store.failed.promise;
    // The event: the first completion failed, and the record is past its lease (in progress, no lease left) or completed.
    await until(async () => {
      const record = await store.find('Bearer a', 'flaky-completion');
      return record && (record.status === 'completed' || record.leaseRemainingMs === 0) ? record : undefined;
    }, 'the lease to lapse or the retried completion to land');
    const duplicate = await postJson(url, { amount: 1 }, { key: 'flaky-completion', account: 'a' });
    const firstAnswer = await first;
    expect({ executions: executions.length, first: firstAnswer.status }).toEqual({ executions: 1, first: 201 });
    expect([409, 201]).toContain(duplicate.status);
  });
});
