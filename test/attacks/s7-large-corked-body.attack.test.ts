import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { postJson } from '../helpers/http.js';
import { newKey, pipelinedCrashHarness } from '../helpers/pipelined-crash-harness.js';

/**
 * The completion and the ending go to the socket in one corked write: with a multi-MB response body that write
 * is larger than the socket buffer. It must still commit once, and the retry must replay the body byte for byte.
 */
describe('a multi-MB response body through the corked completion write', () => {
  const harness = pipelinedCrashHarness('atk_s7_large_body');
  const { start, chargesOf } = harness;
  const maxBodyBytes = 16 * 1024 * 1024;

  for (const sizeBytes of [3 * 1024 * 1024, 12 * 1024 * 1024]) {
    it(`${sizeBytes} bytes (multi-byte UTF-8 included): commits once, replays byte for byte, the next request on the connection works`, async () => {
      // Base64 text plus multi-byte characters, so the stored body is not a repetition Postgres could shortcut.
      const body = `${randomBytes((sizeBytes * 3) / 4).toString('base64')}\u00e9\u2603\u{1F600}`;
      const app = await start(
        true,
        async (ctx, tdb) => {
          await harness.charge(ctx, tdb);
          ctx.status = 201;
          ctx.type = 'text/plain; charset=utf-8';
          ctx.body = ctx.get('x-small') ? 'small' : body;
        },
        { idempotency: { maxBodyBytes } },
      );
      const key = newKey(`large-${sizeBytes}`);
      const first = await postJson(app.url, {}, { key });
      const retry = await postJson(app.url, {}, { key });
      const next = await postJson(app.url, {}, { key: newKey('large-next'), headers: { 'x-small': '1' } });
      expect({
        first: first.status,
        firstSame: first.text === body,
        retry: retry.status,
        retrySame: retry.text === body,
        charges: await chargesOf(key),
        executions: app.executions(),
        next: next.status,
      }).toEqual({ first: 201, firstSame: true, retry: 201, retrySame: true, charges: 1, executions: 2, next: 201 });
    });
  }
});
