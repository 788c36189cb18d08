import type Koa from 'koa';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';

/** Serves a Koa app on an ephemeral loopback port for real-HTTP tests. */
export async function serve(app: Koa): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface PostOptions {
  key?: string;
  account?: string;
  headers?: Record<string, string>;
}

/** POST a JSON body with an optional key; returns status, headers and the raw body text. */
export async function postJson(url: string, body: unknown, options: PostOptions = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...options.headers };
  if (options.key !== undefined) headers['idempotency-key'] = options.key;
  if (options.account !== undefined) headers.authorization = `Bearer ${options.account}`;
  const response = await fetch(url, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: response.status, headers: response.headers, text: await response.text() };
}
