import { randomUUID } from 'node:crypto';
import type Koa from 'koa';
import { describe, beforeAll, expect, it } from 'vitest';
import type { PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets } from '../helpers/databases.js';
import { lifecycleHarness, MODES, newKey, post } from '../helpers/lifecycle-harness.js';

/** Regressions of issue 14, each describe block named after the behaviour: what a replay gives back of a response written around Koa or of headers set outside the downstream chain (test/helpers/lifecycle-harness.ts). */
describe.each(databaseTargets())('lifecycle hardening on $name', (target) => {
  const lifecycle = lifecycleHarness(target, 'lifecycle_replays');
  const { start, completed, expectProblem } = lifecycle;
  let store: PostgresStore;
  beforeAll(() => {
    ({ store } = lifecycle);
  });

  describe.each(MODES)('$mode mode', ({ mode, transactional }) => {
    describe('a response written around Koa is not replayable', () => {
      const writtenAroundKoa = [
        {
          how: 'ctx.respond = false',
          sent: '{"id":"raw"}',
          write: (ctx: Koa.Context) => {
            ctx.respond = false;
            ctx.res.statusCode = 201;
            ctx.res.end('{"id":"raw"}');
          },
        },
        {
          how: "ctx.respond = false and no status (not Koa's default 404)",
          sent: 'raw',
          write: (ctx: Koa.Context) => {
            ctx.respond = false;
            ctx.res.end('raw');
          },
        },
        {
          how: 'headers sent on ctx.res',
          sent: 'proxied',
          write: (ctx: Koa.Context) => {
            ctx.res.writeHead(201, { 'content-type': 'text/plain' });
            ctx.res.end('proxied');
          },
        },
      ];
      it.each(writtenAroundKoa)('answers the retry of a response written with $how by 409 response-not-replayable, not a replay', async ({ write, sent }) => {
        const { url, executions } = await start({ transactional, respond: write });
        const key = newKey(`around-koa-${mode}`);
        expect((await post(url, key)).text).toBe(sent);
        await completed(key);

        expectProblem(await post(url, key), 409, 'notReplayable');
        expect(executions()).toBe(1);
      });
    });

    describe('only the headers the downstream chain set are replayed', () => {
      it("keeps the retry's own request ID, CORS and rate-limit headers, and replays the handler's headers", async () => {
        let remaining = 100;
        const outer: Koa.Middleware = async (ctx, next) => {
          ctx.set('X-Request-Id', randomUUID());
          ctx.set('Access-Control-Allow-Origin', ctx.get('Origin'));
          ctx.set('RateLimit-Remaining', String(--remaining));
          ctx.set('Cache-Control', 'no-store');
          await next();
        };
        const { url } = await start({
          transactional,
          outer,
          respond: (ctx) => {
            ctx.set('Location', '/charges/1');
            ctx.set('Cache-Control', 'private, max-age=60'); // changed by the handler: part of its response
          },
        });
        const key = newKey(`outer-headers-${mode}`);
        const first = await post(url, key, { origin: 'https://a.example' });
        const replay = await post(url, key, { origin: 'https://b.example' });

        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.headers.get('x-request-id')).not.toBe(first.headers.get('x-request-id'));
        expect(replay.headers.get('access-control-allow-origin')).toBe('https://b.example');
        expect(replay.headers.get('ratelimit-remaining')).toBe('98');
        expect(replay.headers.get('location')).toBe('/charges/1');
        expect(replay.headers.get('cache-control')).toBe('private, max-age=60');
        expect(Object.keys((await store.find('', key))!.response!.headers).sort()).toEqual(['cache-control', 'content-type', 'location']);
      });

      it('never stores or replays Authentication-Info or Proxy-Authentication-Info', async () => {
        const { url } = await start({
          transactional,
          respond: (ctx) => {
            ctx.set('Authentication-Info', 'nextnonce="s3cret"');
            ctx.set('Proxy-Authentication-Info', 'nextnonce="s3cret"');
          },
        });
        const key = newKey(`auth-info-${mode}`);
        const first = await post(url, key);
        expect(first.headers.get('authentication-info')).toBe('nextnonce="s3cret"');
        const replay = await post(url, key);
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.headers.get('authentication-info')).toBeNull();
        expect(replay.headers.get('proxy-authentication-info')).toBeNull();
        expect((await store.find('', key))!.response!.headers).not.toHaveProperty('authentication-info');
      });
    });
  });
});
