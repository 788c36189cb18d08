import Koa from 'koa';
import { Readable } from 'node:stream';
import { once } from 'node:events';
import { bodyParser } from '@koa/bodyparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FencedError, idempotency, problemType, type IdempotencyOptions, type IdempotencyStore } from '../../src/index.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/**
 * Black-box checks (these hold) of the headers on a problem answered after the handler ran: 500 request-failed
 * (a body JSON cannot serialise, shouldStore throws) and 503 (the completion was fenced). The headers are put
 * back as the outer middleware left them before the handler ran: its multi-valued headers and cookies whole,
 * a header the handler removed back, the handler's own headers (cookies, Location, Retry-After) gone, and the
 * outer middleware reading headers after next() sees the problem's.
 */

let keySeq = 0;
const newKey = (label: string) => `${label}-${Date.now()}-${++keySeq}`;

describe('the headers of a problem answered after the handler ran', () => {
  let db: TestDatabase;
  let postgres: IdempotencyStore;
  const closing: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await databaseTargets()[0]!.open('atk_problem_headers');
    postgres = await db.store();
  });
  afterAll(async () => {
    await Promise.all(closing.splice(0).map((close) => close()));
    await db?.close();
  });

  /** The outer middleware sets CORS, Link (two values), Vary and a cookie, and copies Location after next(). */
  async function post(options: Partial<IdempotencyOptions>, handler: Koa.Middleware) {
    const app = new Koa();
    app.silent = true;
    app.use(async (ctx, next) => {
      ctx.set('Access-Control-Allow-Origin', 'https://app.example');
      ctx.set('Link', ['</a>; rel=a', '</b>; rel=b']);
      ctx.set('Vary', 'Origin');
      ctx.cookies.set('csrf', 'outer');
      await next();
      ctx.set('X-Seen-Location', ctx.response.get('Location') || 'none');
    });
    app.use(bodyParser());
    app.use(idempotency({ store: postgres, ...options }));
    app.use(handler);
    const http = await serve(app);
    closing.push(() => http.close());
    const response = await fetch(`${http.url}/orders`, {
      method: 'POST',
      headers: { 'idempotency-key': newKey('headers'), 'content-type': 'application/json' },
      body: '{"amount":1}',
    });
    const body = (await response.json()) as { type: string };
    return {
      status: response.status,
      type: body.type,
      contentType: response.headers.get('content-type'),
      cors: response.headers.get('access-control-allow-origin'),
      link: response.headers.get('link'),
      vary: response.headers.get('vary'),
      cookies: response.headers.getSetCookie(),
      location: response.headers.get('location'),
      retryAfter: response.headers.get('retry-after'),
      seenLocation: response.headers.get('x-seen-location'),
    };
  }

  /** Changes every header the outer middleware set, and adds its own. */
  function meddle(ctx: Koa.Context): void {
    ctx.status = 201;
    ctx.set('Access-Control-Allow-Origin', '*');
    ctx.append('Link', '</c>; rel=c');
    ctx.remove('Vary');
    ctx.cookies.set('session', 'handler');
    ctx.set('Location', '/orders/1');
    ctx.set('Retry-After', '99');
  }

  const outer = {
    cors: 'https://app.example',
    link: '</a>; rel=a, </b>; rel=b',
    vary: 'Origin',
    cookies: ['csrf=outer; path=/; httponly'],
    location: null,
    seenLocation: 'none',
  };

  it('500 request-failed for a BigInt body', async () => {
    const answer = await post({}, (ctx) => {
      meddle(ctx);
      ctx.body = { id: 1n };
    });
    expect(answer).toEqual({ status: 500, type: problemType('requestFailed'), contentType: 'application/problem+json', retryAfter: null, ...outer });
  });

  it('500 request-failed for a shouldStore that throws, after a stream body (the stream is destroyed)', async () => {
    const stream = new Readable({
      read() {
        this.push('chunk');
      },
    });
    const closed = once(stream, 'close');
    const answer = await post(
      {
        shouldStore: () => {
          throw new Error('shouldStore failed');
        },
      },
      (ctx) => {
        meddle(ctx);
        ctx.body = stream;
      },
    );
    await closed;
    expect(answer).toEqual({ status: 500, type: problemType('requestFailed'), contentType: 'application/problem+json', retryAfter: null, ...outer });
  });

  it('503 store-unavailable for a completion the store fenced (its own Retry-After, not the handler’s)', async () => {
    // PostgresStore with every completion fenced, as if another worker had taken the key over.
    const fencing: IdempotencyStore = {
      claim: (request) => postgres.claim(request),
      claimInTransaction: (request) => postgres.claimInTransaction(request),
      complete: (lease) => Promise.reject(new FencedError(lease.fence)),
      release: (lease) => postgres.release(lease),
      renewLease: (lease, leaseMs) => postgres.renewLease(lease, leaseMs),
      saveStep: (lease, name, result, sql) => postgres.saveStep(lease, name, result, sql),
      watch: (scope, key) => postgres.watch(scope, key),
    };
    let ran = 0;
    const answer = await post({ store: fencing }, (ctx) => {
      ran++;
      meddle(ctx);
      ctx.body = { order: 1 };
    });
    expect({ ran, ...answer }).toEqual({
      ran: 1,
      status: 503,
      type: problemType('storeUnavailable'),
      contentType: 'application/problem+json',
      retryAfter: '1',
      ...outer,
    });
  });
});
