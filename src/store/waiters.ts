import { hash } from 'node:crypto';
import { diag } from '@opentelemetry/api';
import type { TableName } from './schema.js';
import type { Unsubscribe } from './sql-database.js';
import { Announcements, type Announcer } from './announcements.js';
import type { ChangeWatch } from './types.js';

/**
 * Wakes duplicates that wait for the first request of their key. With the `'notify'` strategy every
 * waiter of the process shares ONE subscription (one LISTEN connection per store) and is woken by the
 * NOTIFY that the completing or releasing statement sends. A NOTIFY only hastens a wake-up: the caller
 * re-reads on a bounded schedule whatever happens (claim-settling.ts), and a waiter that cannot be
 * notified (no subscription, not announced) answers `'changed'` every `pollIntervalMs`. The `'poll'`
 * strategy is that alone, for connections that cannot LISTEN (transaction-pooling PgBouncer).
 */
export interface WaitersOptions {
  strategy: 'notify' | 'poll';
  pollIntervalMs: number;
  /** The records table, whose completions notify on a channel of their own. */
  table: TableName;
  listen(channel: string, onNotify: (payload: string) => void, onReconnect: () => void): Promise<Unsubscribe>;
  /**
   * With `'notify'`: announces a waiter of one key where completions look for it (completions notify only
   * while one is announced), and withdraws it. Without it, completions always notify.
   */
  announcer?: Announcer;
  /** Most waiters announced at once (PostgresStoreOptions.maxAnnouncedWaiters); the others poll. */
  maxAnnouncedWaiters: number;
}

export class Waiters {
  readonly channel: string;
  readonly strategy: 'notify' | 'poll';
  readonly #options: WaitersOptions;
  readonly #byId = new Map<string, Set<() => void>>();
  readonly #announcements: Announcements | undefined;
  #subscription: Promise<Unsubscribe> | undefined;

  constructor(options: WaitersOptions) {
    this.#options = options;
    this.channel = notifyChannel(options.table);
    this.strategy = options.strategy;
    this.#announcements = options.strategy === 'notify' && options.announcer ? new Announcements(options.announcer, options.maxAnnouncedWaiters) : undefined;
  }

  /**
   * Registers interest in one record BEFORE the caller re-reads it, so a completion that lands between
   * the read and the wait is not missed: subscribed, then announced (when completions look for waiters).
   * A waiter that cannot subscribe or announce itself polls instead: never an error, never a lost wake-up.
   */
  async watch(scope: string, key: string): Promise<ChangeWatch> {
    const { pollIntervalMs } = this.#options;
    if (this.strategy === 'poll') return pollWatch(pollIntervalMs);
    const watch = await this.#watchId(notifyId(scope, key)).catch((error: unknown) => {
      diag.warn('koa-idempotency: a waiting duplicate could not subscribe to notifications (LISTEN); it re-reads the record every pollIntervalMs', error);
      return undefined;
    });
    if (!watch) return pollWatch(pollIntervalMs);
    if (!this.#announcements) return watch;
    const withdraw = await this.#announcements.announce(scope, key);
    if (!withdraw) return polling(watch, pollIntervalMs);
    return {
      next: (timeoutMs) => watch.next(timeoutMs),
      close: () => {
        watch.close();
        withdraw();
      },
    };
  }

  async #watchId(id: string): Promise<ChangeWatch> {
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

  #subscribe(): Promise<Unsubscribe> {
    this.#subscription ??= this.#options
      .listen(
        this.channel,
        (payload) => {
          for (const onChange of this.#byId.get(payload) ?? []) onChange();
        },
        () => this.#reconnected(),
      )
      .catch((error: unknown) => {
        this.#subscription = undefined;
        throw error;
      });
    return this.#subscription;
  }

  /** The listening connection was replaced: announce again, and wake everyone (a NOTIFY may have been missed). */
  #reconnected(): void {
    this.#announcements?.reannounce();
    for (const set of this.#byId.values()) for (const onChange of set) onChange();
  }
}

/** A subscribed watch that is not announced (completions may not notify it): it also answers every `pollIntervalMs`. */
function polling(watch: ChangeWatch, pollIntervalMs: number): ChangeWatch {
  return {
    next: async (timeoutMs) => {
      const woken = await watch.next(Math.min(timeoutMs, pollIntervalMs));
      return woken === 'timeout' && timeoutMs > pollIntervalMs ? 'changed' : woken;
    },
    close: () => watch.close(),
  };
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

/** NOTIFY channel of one table: an identifier derived from the validated table name. */
export function notifyChannel(table: TableName): string {
  return `koa_idempotency_${hash('sha256', `${table.schema}.${table.table}`).slice(0, 16)}`;
}

/** NOTIFY payload naming one record: a hash, so no key or scope travels to every listener of the database. */
export function notifyId(scope: string, key: string): string {
  return hash('sha256', `${scope.length}:${scope}${key}`).slice(0, 32);
}
