import { describe, expect, it } from 'vitest';
import { databaseTargets } from './helpers/databases.js';
import { postJson } from './helpers/http.js';
import { securityApp, securityTelemetry } from './helpers/security-app.js';

/** SECURITY.md's promise that credentials are never stored or replayed (test/helpers/security-app.ts). */

const telemetry = securityTelemetry();

describe.each(databaseTargets())('on $name', (target) => {
  const security = securityApp(target, 'security_credentials', telemetry);
  const { app } = security;

  describe('credentials are never stored or replayed', () => {
    it('drops Set-Cookie, Authorization, WWW-Authenticate, Proxy-Authenticate and configured headers from the record and the replay', async () => {
      const { store, server } = await app({
        excludeHeaders: ['X-Session-Token'],
        handler: (ctx) => {
          ctx.status = 201;
          ctx.set('Set-Cookie', 'session=s3cret; HttpOnly');
          ctx.set('Authorization', 'Bearer s3cret');
          ctx.set('Proxy-Authenticate', 'Basic realm="s3cret"');
          ctx.set('WWW-Authenticate', 'Digest realm="api", nonce="s3cret"');
          ctx.set('X-Session-Token', 's3cret');
          ctx.set('X-Visible', 'kept');
          ctx.body = { ok: true };
        },
      });
      try {
        const first = await postJson(`${server.url}/op`, {}, { key: 'cookie-key' });
        expect(first.headers.get('set-cookie')).toContain('s3cret');
        const replay = await postJson(`${server.url}/op`, {}, { key: 'cookie-key' });
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.headers.get('x-visible')).toBe('kept');
        for (const name of ['set-cookie', 'authorization', 'proxy-authenticate', 'www-authenticate', 'x-session-token'])
          expect(replay.headers.get(name), name).toBeNull();
        const record = await store.find('', 'cookie-key');
        expect(JSON.stringify(record?.response?.headers)).not.toContain('s3cret');
      } finally {
        await server.close();
      }
    });

    it('drops Set-Cookie2, Proxy-Connection and the headers a Connection header names (hop-by-hop, RFC 9110 section 7.6.1) from the record and the replay', async () => {
      const { store, server } = await app({
        handler: (ctx) => {
          ctx.status = 201;
          ctx.set('Set-Cookie2', 'legacy=s3cret; Version=1');
          ctx.set('Proxy-Connection', 'keep-alive');
          ctx.set('Connection', 'X-Hop-Token');
          ctx.set('X-Hop-Token', 's3cret');
          ctx.set('X-Visible', 'kept');
          ctx.body = { ok: true };
        },
      });
      try {
        await postJson(`${server.url}/op`, {}, { key: 'hop-key' });
        const replay = await postJson(`${server.url}/op`, {}, { key: 'hop-key' });
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(replay.headers.get('x-visible')).toBe('kept');
        for (const name of ['set-cookie2', 'proxy-connection', 'x-hop-token']) expect(replay.headers.get(name), name).toBeNull();
        const record = await store.find('', 'hop-key');
        expect(JSON.stringify(record?.response?.headers)).not.toContain('s3cret');
      } finally {
        await server.close();
      }
    });
  });
});
