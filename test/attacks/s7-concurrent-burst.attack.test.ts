import { describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedCrashHarness } from '../helpers/pipelined-crash-harness.js';

/**
 * Identical requests in bursts (64 at once on one key, and 16 keys x 6 at once) on a pipelined pool smaller than
 * the burst: each key charges exactly once, and every answer is the stored 201 or an RFC 9457 problem.
 */
describe('bursts of identical requests on a pipelined pool in transactional mode', () => {
  const harness = pipelinedCrashHarness('atk_s7_burst');
  const { start, chargesOf, problemType } = harness;

  const app = () =>
    start(
      true,
      async (ctx, tdb) => {
        await harness.charge(ctx, tdb);
        await tdb.query('SELECT pg_sleep(0.02)');
        ctx.status = 201;
        ctx.body = { key: ctx.idempotency!.key };
      },
      { max: 8 },
    );

  const classify = (answer: { status: number; text: string }, key: string) =>
    answer.status === 201 && answer.text === JSON.stringify({ key })
      ? 'stored'
      : answer.status >= 400 && problemType(answer.text) !== answer.text
        ? 'problem'
        : `other ${answer.status} ${answer.text.slice(0, 80)}`;

  it('64 identical requests at once: one charge, one execution, every answer a 201 or a problem', async () => {
    const served = await app();
    const key = newKey('burst-one');
    const answers = await Promise.all(Array.from({ length: 64 }, () => postJson(served.url, { amount: 1 }, { key })));
    const kinds = new Set(answers.map((answer) => classify(answer, key)));
    expect({ kinds: [...kinds].filter((kind) => kind !== 'stored' && kind !== 'problem'), charges: await chargesOf(key), executions: served.executions() }).toEqual({
      kinds: [],
      charges: 1,
      executions: 1,
    });
  });

  it('16 keys x 6 identical requests at once: each key charges exactly once', async () => {
    const served = await app();
    const keys = Array.from({ length: 16 }, (_, i) => newKey(`burst-many-${i}`));
    const answers = await Promise.all(
      keys.flatMap((key) => Array.from({ length: 6 }, () => postJson(served.url, { amount: 1 }, { key }).then((answer) => classify(answer, key)))),
    );
    const charges = await Promise.all(keys.map((key) => chargesOf(key)));
    expect({ others: answers.filter((kind) => kind !== 'stored' && kind !== 'problem'), charges, executions: served.executions() }).toEqual({
      others: [],
      charges: keys.map(() => 1),
      executions: 16,
    });
  });
});
