import net from 'node:net';

/**
 * Sends raw bytes to an HTTP server and reads the answer, for requests no well-behaved client would
 * send (control characters in headers, repeated headers, lying Content-Length). One connection per
 * request; the caller's bytes should ask for `Connection: close`.
 */
export interface RawAnswer {
  /** The status code, or 0 when the server closed without answering. */
  status: number;
  /** Lower-case header names to values, as received. */
  headers: Record<string, string>;
  body: string;
  elapsedMs: number;
  /** No complete answer within the bound: the server hung. */
  timedOut: boolean;
}

export function rawRequest(port: number, request: Buffer, timeoutMs: number): Promise<RawAnswer> {
  const startedMs = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1');
    const finish = (timedOut: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parse(Buffer.concat(chunks)), elapsedMs: performance.now() - startedMs, timedOut });
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    // Written, not ended: a real client keeps its side open while it waits for the answer.
    socket.on('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined); // the server may reset after answering a malformed request
    socket.on('close', () => finish(false));
  });
}

function parse(raw: Buffer): Pick<RawAnswer, 'status' | 'headers' | 'body'> {
  const text = raw.toString('latin1');
  const headerEnd = text.indexOf('\r\n\r\n');
  const head = headerEnd === -1 ? text : text.slice(0, headerEnd);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: status ? Number(status[1]) : 0, headers, body: headerEnd === -1 ? '' : text.slice(headerEnd + 4) };
}

/** Builds a request's bytes; header lines are given raw so they can hold anything. */
export function buildRequest(parts: { method?: string; path?: string; headerLines: Array<string | Buffer>; body?: Buffer | string }): Buffer {
  const body = parts.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(parts.body) ? parts.body : Buffer.from(parts.body);
  const head = [
    Buffer.from(`${parts.method ?? 'POST'} ${parts.path ?? '/payments'} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n`),
    ...parts.headerLines.map((line) => Buffer.concat([Buffer.isBuffer(line) ? line : Buffer.from(line, 'latin1'), Buffer.from('\r\n')])),
    Buffer.from('\r\n'),
  ];
  return Buffer.concat([...head, body]);
}
