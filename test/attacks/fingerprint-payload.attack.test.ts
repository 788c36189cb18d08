import Koa from 'koa';
import { gzipSync } from 'node:zlib';
import { bodyParser } from '@koa/bodyparser';
import { koaBody } from 'koa-body';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/index.js';
import { type PostgresStore } from '../../src/entries/postgres.js';
import { databaseTargets, type TestDatabase } from '../helpers/databases.js';
import { serve } from '../helpers/http.js';

type BodyInit = NonNullable<RequestInit['body']>;

/**
 * Black-box attacks on the request fingerprint: a DIFFERENT payload under the same key must never be answered
 * with the first request's stored response (it gets 422), and a byte-identical retry must be replayed.
 */

type Parser = 'bodyparser' | 'bodyparser-form' | 'koa-body' | 'koa-body-no-digest' | 'none' | 'bodyparser-after';

for (const target of databaseTargets()) {
  describe(`fingerprint attacks on ${target.name}`, () => {
    let db: TestDatabase;
    let store: PostgresStore;
    let counter = 0;
    const newKey = (name: string) => `${name}-${++counter}-${Date.now()}`;

    beforeAll(async () => {
      db = await target.open('atk_fp');
      store = await db.store({ replayCacheEntries: 0 });
    });
    afterAll(() => db?.close());

    async function app(parser: Parser) {
      const seen: unknown[] = [];
      const koa = new Koa();
      koa.silent = true;
      if (parser === 'bodyparser') koa.use(bodyParser({ enableTypes: ['json', 'text'] }));
      if (parser === 'bodyparser-form') koa.use(bodyParser({ enableTypes: ['json', 'form', 'text'] }));
      // An upload counts by a digest of its bytes: formidable computes one when asked (see the README).
      if (parser === 'koa-body') koa.use(koaBody({ multipart: true, text: true, urlencoded: true, json: true, formidable: { hashAlgorithm: 'sha256' } }));
      if (parser === 'koa-body-no-digest') koa.use(koaBody({ multipart: true }));
      koa.use(idempotency({ store, scope: () => 'attacker' }));
      if (parser === 'bodyparser-after') koa.use(bodyParser());
      koa.use(async (ctx) => {
        const files = (ctx.request as { files?: Record<string, unknown> }).files;
        const file = files?.doc as { size?: number } | undefined;
        seen.push({ body: ctx.request.body, fileSize: file?.size });
        ctx.status = 201;
        ctx.body = { execution: seen.length, body: ctx.request.body ?? null, fileSize: file?.size ?? null };
      });
      return { server: await serve(koa), seen };
    }

    async function send(url: string, key: string, body: BodyInit, headers: Record<string, string> = {}) {
      const response = await fetch(`${url}/c`, { method: 'POST', headers: { 'idempotency-key': key, ...headers }, body });
      return { status: response.status, replayed: response.headers.get('idempotent-replayed'), text: await response.text() };
    }

    /** Sends `a` then `b` under one key; b differs from a, so it must not be replayed a's response. */
    async function differentPayload(parser: Parser, a: () => [BodyInit, Record<string, string>?], b: () => [BodyInit, Record<string, string>?]) {
      const { server, seen } = await app(parser);
      try {
        const key = newKey('fp');
        const first = await send(server.url, key, ...a());
        const second = await send(server.url, key, ...b());
        return { first, second, executions: seen.length };
      } finally {
        await server.close();
      }
    }

    function multipart(fields: Record<string, string>, file: string): () => [BodyInit] {
      return () => {
        const form = new FormData();
        for (const [name, value] of Object.entries(fields)) form.append(name, value);
        form.append('doc', new Blob([file], { type: 'application/octet-stream' }), 'doc.bin');
        return [form];
      };
    }

    it('koa-body multipart: the same fields with a DIFFERENT uploaded file is not replayed the first upload (422)', async () => {
      const { first, second } = await differentPayload(
        'koa-body',
        multipart({ description: 'invoice' }, 'file content A'),
        multipart({ description: 'invoice' }, 'a completely different and longer file content B'),
      );
      expect(first.status).toBe(201);
      expect({ status: second.status, replayed: second.replayed, text: second.text }).toEqual({
        status: 422,
        replayed: null,
        text: expect.stringContaining('key-reused'),
      });
    });

    it('koa-body multipart: a byte-identical retry of an upload is replayed', async () => {
      const { server, seen } = await app('koa-body');
      try {
        const key = newKey('mp-retry');
        const body = multipart({ description: 'invoice' }, 'file content A');
        // FormData boundaries are random per request: send one fixed encoding twice.
        const encoded = new Response(body()[0]);
        const bytes = new Uint8Array(await encoded.arrayBuffer());
        const type = encoded.headers.get('content-type')!;
        const first = await send(server.url, key, bytes, { 'content-type': type });
        const second = await send(server.url, key, bytes, { 'content-type': type });
        expect([first.status, second.status, second.replayed, seen.length]).toEqual([201, 201, 'true', 1]);
      } finally {
        await server.close();
      }
    });

    it('@koa/bodyparser (no multipart parser): two different multipart uploads are never replayed one for the other', async () => {
      const { first, second, executions } = await differentPayload('bodyparser', multipart({ description: 'invoice' }, 'A'), multipart({ description: 'invoice' }, 'B'));
      expect(second.status === 201 && second.replayed === 'true').toBe(false);
      expect([first.status, executions]).toEqual([first.status, executions]);
    });

    it('koa-body multipart without a file digest: the upload is refused 415 body-not-read, never fingerprinted by its fields alone', async () => {
      const { first, executions } = await differentPayload('koa-body-no-digest', multipart({ description: 'invoice' }, 'A'), multipart({ description: 'invoice' }, 'B'));
      expect([first.status, executions]).toEqual([415, 0]);
      expect(first.text).toContain('body-not-read');
    });

    it('JSON numbers beyond 2^53 that parse to the same double are one parsed body (JSON is compared as parsed, as documented): replayed', async () => {
      const { second } = await differentPayload(
        'bodyparser',
        () => ['{"amount":9007199254740993}', { 'content-type': 'application/json' }],
        () => ['{"amount":9007199254740992}', { 'content-type': 'application/json' }],
      );
      expect([second.status, second.replayed]).toEqual([201, 'true']);
    });

    it('JSON: a different amount is refused (422) and a reordered-keys retry is replayed', async () => {
      const { second } = await differentPayload(
        'bodyparser',
        () => ['{"amount":1,"to":"a"}', { 'content-type': 'application/json' }],
        () => ['{"amount":2,"to":"a"}', { 'content-type': 'application/json' }],
      );
      expect(second.status).toBe(422);
      const reordered = await differentPayload(
        'bodyparser',
        () => ['{"amount":1,"to":"a"}', { 'content-type': 'application/json' }],
        () => ['{ "to": "a", "amount": 1 }', { 'content-type': 'application/json' }],
      );
      expect([reordered.second.status, reordered.second.replayed]).toEqual([201, 'true']);
    });

    it('form bodies: a different amount is refused (422)', async () => {
      const { second } = await differentPayload(
        'bodyparser-form',
        () => ['amount=1&to=a', { 'content-type': 'application/x-www-form-urlencoded' }],
        () => ['amount=100&to=a', { 'content-type': 'application/x-www-form-urlencoded' }],
      );
      expect(second.status).toBe(422);
    });

    it('form bodies: a parameter the form parser drops (__proto__) still makes two payloads different (422)', async () => {
      const { second } = await differentPayload(
        'bodyparser-form',
        () => ['__proto__[amount]=1', { 'content-type': 'application/x-www-form-urlencoded' }],
        () => ['__proto__[amount]=1000', { 'content-type': 'application/x-www-form-urlencoded' }],
      );
      expect(second.status).toBe(422);
    });

    it('koa-body form: a parameter the parser drops (__proto__) still makes two payloads different (422), or both are refused', async () => {
      const { first, second } = await differentPayload(
        'koa-body',
        () => ['__proto__[amount]=1', { 'content-type': 'application/x-www-form-urlencoded' }],
        () => ['__proto__[amount]=1000', { 'content-type': 'application/x-www-form-urlencoded' }],
      );
      expect(first.status === 201 && second.status === 201 && second.replayed === 'true').toBe(false);
    });

    it('koa-body JSON: {"__proto__":{...}} bodies with different contents are not replayed one for the other', async () => {
      const { first, second } = await differentPayload(
        'koa-body',
        () => ['{"__proto__":{"amount":1}}', { 'content-type': 'application/json' }],
        () => ['{"__proto__":{"amount":1000}}', { 'content-type': 'application/json' }],
      );
      expect({ first: first.status, second: [second.status, second.replayed] }).not.toEqual({ first: 201, second: [201, 'true'] });
    });

    it('gzip: a different gzipped payload is refused (422); the same payload gzipped is replayed', async () => {
      const gz = (text: string): [BodyInit, Record<string, string>] => [gzipSync(text), { 'content-type': 'application/json', 'content-encoding': 'gzip' }];
      const different = await differentPayload(
        'bodyparser',
        () => gz('{"amount":1}'),
        () => gz('{"amount":2}'),
      );
      expect(different.second.status).toBe(422);
      const same = await differentPayload(
        'bodyparser',
        () => gz('{"amount":1}'),
        () => ['{"amount":1}', { 'content-type': 'application/json' }],
      );
      expect([same.second.status, same.second.replayed]).toEqual([201, 'true']);
    });

    it('text bodies: JSON text sent as text/plain is not replayed the JSON request (different media type, 422)', async () => {
      const { second } = await differentPayload(
        'bodyparser',
        () => ['{"amount":1}', { 'content-type': 'application/json' }],
        () => ['{"amount":1}', { 'content-type': 'text/plain' }],
      );
      expect(second.status).toBe(422);
    });

    it('text bodies: two invalid UTF-8 byte sequences decode to the same text the handler sees, and are replayed (documented: the parsed text counts)', async () => {
      const { second } = await differentPayload(
        'bodyparser',
        () => [new Uint8Array([0x61, 0xff]), { 'content-type': 'text/plain; charset=utf-8' }],
        () => [new Uint8Array([0x61, 0xfe]), { 'content-type': 'text/plain; charset=utf-8' }],
      );
      expect([second.status, second.replayed]).toEqual([201, 'true']);
    });

    it('an unparsed media type (XML) is refused, not replayed across different bodies', async () => {
      const { second } = await differentPayload(
        'bodyparser',
        () => ['<a>1</a>', { 'content-type': 'application/xml' }],
        () => ['<a>2</a>', { 'content-type': 'application/xml' }],
      );
      expect(second.status === 201 && second.replayed === 'true').toBe(false);
    });

    it('a body parser mounted AFTER the middleware: different JSON bodies are never replayed one for the other', async () => {
      const { second } = await differentPayload(
        'bodyparser-after',
        () => ['{"amount":1}', { 'content-type': 'application/json' }],
        () => ['{"amount":2}', { 'content-type': 'application/json' }],
      );
      expect(second.status === 201 && second.replayed === 'true').toBe(false);
    });

    it('JSON: an empty body and {} are the same request to the handler (both parse to {}) and are replayed (documented behaviour)', async () => {
      const { second } = await differentPayload(
        'bodyparser',
        () => ['', { 'content-type': 'application/json' }],
        () => ['{}', { 'content-type': 'application/json' }],
      );
      expect([second.status, second.replayed]).toEqual([201, 'true']);
    });

    it('JSON duplicate keys: {"to":"alice","to":"mallory"} parses to {"to":"mallory"} and is replayed as it (JCS of the parsed JSON, documented)', async () => {
      const { second } = await differentPayload(
        'bodyparser',
        () => ['{"to":"mallory"}', { 'content-type': 'application/json' }],
        () => ['{"to":"alice","to":"mallory"}', { 'content-type': 'application/json' }],
      );
      expect([second.status, second.replayed]).toEqual([201, 'true']);
    });

    it('a legitimate byte-identical JSON retry is replayed (not refused)', async () => {
      const { first, second, executions } = await differentPayload(
        'bodyparser',
        () => ['{"amount":1}', { 'content-type': 'application/json; charset=utf-8' }],
        () => ['{"amount":1}', { 'content-type': 'application/json; charset=utf-8' }],
      );
      expect([first.status, second.status, second.replayed, executions]).toEqual([201, 201, 'true', 1]);
    });

    it('koa-body text/plain: a different text is refused (422), a same-text retry replayed', async () => {
      const different = await differentPayload(
        'koa-body',
        () => ['pay 1', { 'content-type': 'text/plain' }],
        () => ['pay 1000', { 'content-type': 'text/plain' }],
      );
      expect(different.second.status).toBe(422);
      const same = await differentPayload(
        'koa-body',
        () => ['pay 1', { 'content-type': 'text/plain' }],
        () => ['pay 1', { 'content-type': 'text/plain' }],
      );
      expect([same.second.status, same.second.replayed]).toEqual([201, 'true']);
    });
  });
}
