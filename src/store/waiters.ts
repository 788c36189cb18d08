import type { Unsubscribe } from './sql-database.js';
import type { ChangeWatch } from './types.js';

/**
 * Wakes duplicates that wait for the first request of their key. With the `'notify'` strategy every
 * waiter of the process shares ONE subscription (one LISTEN connection per store) and is woken by the
 * NOTIFY that the completing or releasing statement sends; nobody polls. The `'poll'` strategy is the
 * fallback for connections that cannot LISTEN (transaction-pooling PgBouncer): it just sleeps.
 */
export interface WaitersOptions {
  strategy: 'notify' | 'poll';
  pollIntervalMs: number;
  channel: string;
  listen(channel: string, onNotify: (payload: string) => void): Promise<Unsubscribe>;
}

export class Waiters {
  readonly channel: string;
  readonly strategy: 'notify' | 'poll';
  readonly #options: WaitersOptions;
  readonly #byId = new Map<string, Set<() => void>>();
  #subscription: Promise<Unsubscribe> | undefined;

  constructor(options: WaitersOptions) {
    this.#options = options;
    this.channel = options.channel;
    this.strategy = options.strategy;
  }

  /**
   * Registers interest in one record BEFORE the caller re-reads it, so a completion that lands between
   * the read and the wait is not missed.
   */
  async watch(id: string): Promise<ChangeWatch> {
    if (this.#options.strategy === 'poll') return pollWatch(this.#options.pollIntervalMs);
    await this.#subscribe();
    let wake: (() => void) | undefined;
    let changed = false;
    const onChange = () => {
      changed = true;
      wake?.();
    };
    let set = this.#byId.get(id);
    if (!set) this.#byId.set(id, (set = new Set()));
    set.add(onChange);
    return {
      next: (timeoutMs) =>
        new Promise((resolve) => {
          if (changed) {
            changed = false;
            return resolve('changed');
          }
          const timer = setTimeout(() => {
            wake = undefined;
            resolve('timeout');
          }, timeoutMs);
          wake = () => {
            clearTimeout(timer);
            wake = undefined;
            changed = false;
            resolve('changed');
          };
        }),
      close: () => {
        set.delete(onChange);
        if (set.size === 0 && this.#byId.get(id) === set) this.#byId.delete(id);
        wake?.();
      },
    };
  }

  close(): void {
    for (const set of this.#byId.values()) for (const onChange of set) onChange();
    this.#byId.clear();
    const subscription = this.#subscription;
    this.#subscription = undefined;
    void subscription?.then((unsubscribe) => unsubscribe()).catch(() => undefined);
  }

  /** Number of requests waiting right now (for tests and gauges). */
  get size(): number {
    let count = 0;
    for (const set of this.#byId.values()) count += set.size;
    return count;
  }

  #subscribe(): Promise<Unsubscribe> {
    this.#subscription ??= this.#options
      .listen(this.channel, (payload) => {
        for (const onChange of this.#byId.get(payload) ?? []) onChange();
      })
      .catch((error: unknown) => {
        this.#subscription = undefined;
        throw error;
      });
    return this.#subscription;
  }
}

function pollWatch(pollIntervalMs: number): ChangeWatch {
  let timer: NodeJS.Timeout | undefined;
  let finish: ((value: 'changed') => void) | undefined;
  return {
    next: (timeoutMs) =>
      new Promise((resolve) => {
        finish = resolve;
        timer = setTimeout(() => resolve(timeoutMs <= pollIntervalMs ? 'timeout' : 'changed'), Math.min(pollIntervalMs, timeoutMs));
      }),
    close: () => {
      clearTimeout(timer);
      finish?.('changed');
    },
  };
}
