import net from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy between the app and Postgres that a test controls, to inject network faults with a real
 * server behind it:
 *
 * - `pass()`        forward everything (and deliver what a black hole held back, as TCP would after a partition);
 * - `refuse()`      close every new connection at once (Postgres down, port closed);
 * - `cutAll()`      destroy every open connection (a crash, a failover, a firewall reset);
 * - `latencyMs`     delay every chunk, both ways, keeping its order (a slow or distant server);
 * - `blackHole()`   accept connections and hold every byte (a partition: no answer, no reset);
 * - `cutWhen()`     one shot: when the app sends a statement containing a pattern (`COMMIT`), cut the
 *                   connection either before Postgres sees it, or after Postgres has it but before the
 *                   app hears the answer: the two halves of "the outcome is unknown".
 *
 * Loopback only; every socket is closed by `close()`.
 */
export interface TcpProxy {
  readonly port: number;
  /** `databaseUrl` with its host and port replaced by the proxy's. */
  urlFor(databaseUrl: string): string;
  pass(): void;
  refuse(): void;
  blackHole(): void;
  cutAll(): number;
  latencyMs: number;
  /** Resolves when the trigger fired: `before` drops the statement, `after` lets Postgres run it and drops the answer. */
  cutWhen(pattern: string, when: 'before' | 'after'): Promise<void>;
  /** Back to a plain pipe: pass mode, no latency, no armed trigger. */
  reset(): void;
  readonly openConnections: number;
  readonly counts: { accepted: number; refused: number; cut: number };
  close(): Promise<void>;
}

type Mode = 'pass' | 'refuse' | 'blackhole';

interface Trigger {
  pattern: Buffer;
  when: 'before' | 'after';
  fired(): void;
}

/** One direction of one connection: chunks wait here for their latency or for a black hole to lift. */
class Pipe {
  #held: Buffer[] = [];
  #chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly to: net.Socket,
    private readonly proxy: { mode: Mode; latencyMs: number },
  ) {}

  push(chunk: Buffer): void {
    if (this.proxy.mode === 'blackhole') {
      this.#held.push(chunk);
      return;
    }
    this.#send(chunk);
  }

  flush(): void {
    const held = this.#held;
    this.#held = [];
    for (const chunk of held) this.#send(chunk);
  }

  #send(chunk: Buffer): void {
    const delayMs = this.proxy.latencyMs;
    if (delayMs <= 0) {
      this.#chain = this.#chain.then(() => void (this.to.destroyed || this.to.write(chunk)));
      return;
    }
    const dueMs = performance.now() + delayMs;
    this.#chain = this.#chain
      .then(() => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, dueMs - performance.now()))))
      .then(() => void (this.to.destroyed || this.to.write(chunk)));
  }
}

interface Connection {
  client: net.Socket;
  server: net.Socket;
  up: Pipe;
  down: Pipe;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const state = { mode: 'pass' as Mode, latencyMs: 0 };
  const connections = new Set<Connection>();
  const counts = { accepted: 0, refused: 0, cut: 0 };
  let trigger: Trigger | undefined;

  const destroy = (connection: Connection) => {
    connections.delete(connection);
    connection.client.destroy();
    connection.server.destroy();
  };

  const server = net.createServer((client) => {
    if (state.mode === 'refuse') {
      counts.refused++;
      client.destroy();
      return;
    }
    counts.accepted++;
    const upstream = net.connect(target.port, target.host);
    const connection: Connection = {
      client,
      server: upstream,
      up: new Pipe(upstream, state),
      down: new Pipe(client, state),
    };
    connections.add(connection);
    client.on('data', (chunk: Buffer) => {
      const armed = trigger;
      if (armed && chunk.includes(armed.pattern)) {
        trigger = undefined;
        counts.cut++;
        connections.delete(connection);
        if (armed.when === 'after') {
          // Postgres gets the statement and a clean end of stream, so it runs it; the app never hears back.
          upstream.end(chunk);
          upstream.resume();
          client.destroy();
        } else {
          destroy(connection);
        }
        armed.fired();
        return;
      }
      connection.up.push(chunk);
    });
    upstream.on('data', (chunk: Buffer) => connection.down.push(chunk));
    // Either side going away takes the other with it, as a real connection would.
    for (const socket of [client, upstream]) {
      socket.on('error', () => destroy(connection));
      socket.on('close', () => {
        if (connections.has(connection)) destroy(connection);
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  function pass(): void {
    state.mode = 'pass';
    for (const connection of connections) {
      connection.up.flush();
      connection.down.flush();
    }
  }

  return {
    port,
    urlFor(databaseUrl) {
      const url = new URL(databaseUrl);
      url.hostname = '127.0.0.1';
      url.port = String(port);
      return url.toString();
    },
    pass,
    refuse() {
      state.mode = 'refuse';
    },
    blackHole() {
      state.mode = 'blackhole';
    },
    cutAll() {
      const count = connections.size;
      counts.cut += count;
      for (const connection of [...connections]) destroy(connection);
      return count;
    },
    get latencyMs() {
      return state.latencyMs;
    },
    set latencyMs(value: number) {
      state.latencyMs = value;
    },
    cutWhen(pattern, when) {
      return new Promise<void>((resolve) => {
        trigger = { pattern: Buffer.from(pattern), when, fired: resolve };
      });
    },
    reset() {
      trigger = undefined;
      state.latencyMs = 0;
      pass();
    },
    get openConnections() {
      return connections.size;
    },
    counts,
    async close() {
      trigger = undefined;
      for (const connection of [...connections]) destroy(connection);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
