import { createHash } from 'node:crypto';
import { diag } from '@opentelemetry/api';
import type { TableName } from './schema.js';
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
  /** The records table, whose completions notify on a channel of their own. */
  table: TableName;
  listen(channel: string, onNotify: (payload: string) => void): Promise<Unsubscribe>;
  /**
   * With `'notify'`: announces a waiter of one key where completions look for it (completions notify only
   * while one is announced), and withdraws it. Without it, completions always notify.
   */
  announcement?: { announce(scope: string, key: string): Promise<unknown>; withdraw(scope: string, key: string): Promise<unknown> };
}

export class Waiters {
  readonly channel: string;
  readonly strategy: 'notify' | 'poll';
  readonly #options: WaitersOptions;
  readonly #byId = new Map<string, Set<() => void>>();
  #subscription: Promise<Unsubscribe> | undefined;

  constructor(options: WaitersOptions) {
    this.#options = options;
    this.channel = notifyChannel(options.table);
    this.strategy = options.strategy;
  }

  /**
   * Registers interest in one record BEFORE the caller re-reads it, so a completion that lands between
   * the read and the wait is not missed: subscribed, then announced (when completions look for waiters).
   * A waiter that cannot announce itself is woken by its timeout instead.
   */
  async watch(scope: string, key: string): Promise<ChangeWatch> {
    const watch = await this.#watchId(notifyId(scope, key));
    const announcement = this.strategy === 'notify' ? this.#options.announcement : undefined;
    if (!announcement) return watch;
    const announced = await announcement.announce(scope, key).then(
      () => true,
      (error: unknown) => {
        diag.warn('koa-idempotency: a waiting duplicate could not announce itself; it will be woken by its timeout', error);
        return false;
      },
    );
    // Withdrawn once only: the announcements of one key share the listening session, and a second unlock
    // would release another waiter's lock (its completion would then send no notification).
    let withdrawn = !announced;
    return {
      next: (timeoutMs) => watch.next(timeoutMs),
      close: () => {
        watch.close();
        if (withdrawn) return;
        withdrawn = true;
        void announcement.withdraw(scope, key).catch(() => undefined);
      },
    };
  }

  async #watchId(id: string): Promise<ChangeWatch> {
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

/** NOTIFY channel of one table: an identifier derived from the validated table name. */
function notifyChannel(table: TableName): string {
  return `koa_idempotency_${createHash('sha256').update(`${table.schema}.${table.table}`).digest('hex').slice(0, 16)}`;
}

/** NOTIFY payload naming one record: a hash, so no key or scope travels to every listener of the database. */
export function notifyId(scope: string, key: string): string {
  return createHash('sha256').update(`${scope.length}:${scope}${key}`).digest('hex').slice(0, 32);
}
