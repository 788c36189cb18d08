import { beforeAll, describe, expect, it } from 'vitest';
import { idempotentFetch } from '../src/entries/client.js';
import { notNow, type ScriptedServer } from './helpers/scripted-server.js';
import { post, QUICK, scriptedClientEnvironment } from './helpers/scripted-client.js';

/** idempotentFetch and its caller's abort signal (test/helpers/scripted-client.ts). */

const client = scriptedClientEnvironment();
let scripted: ScriptedServer;
beforeAll(() => {
  ({ scripted } = client);
});

describe('aborting', () => {
  it('stops at once during a wait, with the signal reason', async () => {
    scripted.script([notNow(503, '10')]);
    const controller = new AbortController();
    const reason = new Error('the caller gave up');
    // The wait's timer is set right after the attempt is handed to onAttempt: abort on the next turn of the loop.
    const onAttempt = () => void setImmediate(() => controller.abort(reason));
    const startedMs = performance.now();
    await expect(idempotentFetch(scripted.url, { ...post(), signal: controller.signal }, { onAttempt })).rejects.toBe(reason);
    expect(performance.now() - startedMs).toBeLessThan(1_000);
    expect(scripted.requests).toHaveLength(1);
  });

  it('stops at once during an attempt, without retrying it', async () => {
    scripted.script(['hang', { status: 201 }]);
    const startedMs = performance.now();
    const failure = await idempotentFetch(scripted.url, { ...post(), signal: AbortSignal.timeout(150) }, QUICK).catch((e: unknown) => e);
    expect((failure as Error).name).toBe('TimeoutError');
    expect(performance.now() - startedMs).toBeLessThan(1_000);
    // An absence, so checked over a while: ten times the longest backoff, in which a retry would have come.
    await new Promise((resolve) => setTimeout(resolve, 10 * QUICK.maxDelayMs));
    expect(scripted.requests).toHaveLength(1);
  });

  it('sends nothing when the signal is already aborted', async () => {
    scripted.script([{ status: 201 }]);
    await expect(idempotentFetch(scripted.url, { ...post(), signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    expect(scripted.requests).toHaveLength(0);
  });
});
