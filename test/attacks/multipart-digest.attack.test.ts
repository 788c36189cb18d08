import Koa from 'koa';
import { koaBody } from 'koa-body';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

/** Round 2 on uploads counted by a digest: a different upload under the same key is never replayed. */

const target = databaseTargets()[0]!;

describe(`multipart digest attacks on ${target.name}`, () => {
  let db: TestDatabase;
  let store: PostgresStore;
  let counter = 0;
  const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

  beforeAll(async () => {
    db = await target.open('atk_mp2');
    store = await db.store({ replayCacheEntries: 0 });
  });
  afterAll(() => db?.close());

  async function app(before?: Koa.Middleware) {
    let executions = 0;
    const koa = new Koa();
    koa.silent = true;
    koa.use(koaBody({ multipart: true, formidable: { hashAlgorithm: 'sha256', allowEmptyFiles: true, minFileSize: 0 } }));
    if (before) koa.use(before);
    koa.use(idempotency({ store, scope: () => 'attacker' }));
    koa.use(async (ctx) => {
      executions++;
      ctx.status = 201;
      ctx.body = { execution: executions };
    });
    return { server: await serve(koa), executions: () => executions };
  }

  type Part = [field: string, content: string, filename?: string];
  const form = (parts: Part[]) => {
    const data = new FormData();
    for (const [field, content, filename] of parts) {
      if (filename === undefined) data.append(field, content);
      else data.append(field, new Blob([content], { type: 'application/octet-stream' }), filename);
    }
    return data;
  };

  async function pair(a: Part[], b: Part[], before?: Koa.Middleware) {
    const { server, executions } = await app(before);
    const key = newKey('mp');
    try {
      const first = await fetch(`${server.url}/u`, { method: 'POST', headers: { 'idempotency-key': key }, body: form(a) });
      const second = await fetch(`${server.url}/u`, { method: 'POST', headers: { 'idempotency-key': key }, body: form(b) });
      return { first: first.status, second: second.status, replayed: second.headers.get('idempotent-replayed'), executions: executions() };
    } finally {
      await server.close();
    }
  }

  it('two files in one field, the second different: 422, not a replay', async () => {
    const result = await pair(
      [
        ['doc', 'AAAA', 'a.bin'],
        ['doc', 'BBBB', 'b.bin'],
      ],
      [
        ['doc', 'AAAA', 'a.bin'],
        ['doc', 'CCCC', 'b.bin'],
      ],
    );
    expect([result.first, result.second, result.replayed]).toEqual([201, 422, null]);
  });

  it('the same two files swapped between their names: 422, not a replay', async () => {
    const result = await pair(
      [
        ['x', 'AAAA', 'a.bin'],
        ['y', 'BBBB', 'b.bin'],
      ],
      [
        ['x', 'BBBB', 'a.bin'],
        ['y', 'AAAA', 'b.bin'],
      ],
    );
    expect([result.first, result.second, result.replayed]).toEqual([201, 422, null]);
  });

  it('a text field versus a file of the same content under the same name: 422', async () => {
    const result = await pair([['doc', 'AAAA']], [['doc', 'AAAA', 'doc.txt']]);
    expect([result.first, result.second, result.replayed]).toEqual([201, 422, null]);
  });

  it('an extra empty file part: 422, not a replay', async () => {
    const result = await pair(
      [['note', 'hi']],
      [
        ['note', 'hi'],
        ['doc', '', 'empty.bin'],
      ],
    );
    expect([result.first, result.second]).toEqual([201, 422]);
  });

  it('user middleware that moves the uploads off ctx.request.files (keeping them on ctx.files) still gets them counted', async () => {
    const move: Koa.Middleware = async (ctx, next) => {
      const request = ctx.request as { files?: unknown };
      (ctx as unknown as { files?: unknown }).files = request.files;
      delete request.files;
      await next();
    };
    const result = await pair([['doc', 'AAAA', 'a.bin']], [['doc', 'ZZZZ', 'a.bin']], move);
    expect([result.first, result.second, result.replayed]).toEqual([201, 422, null]);
  });

  it('user middleware that sets ctx.request.files = {} (cleared after saving them) cannot make a different upload replay', async () => {
    const clear: Koa.Middleware = async (ctx, next) => {
      (ctx.request as { files?: unknown }).files = {};
      await next();
    };
    const result = await pair([['doc', 'AAAA', 'a.bin']], [['doc', 'ZZZZ', 'a.bin']], clear);
    // Either refused (415: the body was read but nothing counts) or 422; never a replay of the first.
    expect(result.replayed).toBeNull();
    expect([415, 422]).toContain(result.second);
  });
});
