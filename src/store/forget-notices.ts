import { diag } from '@opentelemetry/api';
import type { Unsubscribe } from './sql-database.js';

/**
 * Tells every process about a record an operator forgot (`koa-idempotency forget`), so that none replays it
 * from its replay cache: the next request of the key must run again. The forget sends a NOTIFY on the
 * store's channel, payload `forget:<notifyId>`, which the waiters of the channel ignore.
 *
 * A process keeps completed records in its cache only while it listens for these notices: the first cacheable
 * record starts the LISTEN and is not cached, so no entry is ever held that a forget could miss. A store that
 * cannot LISTEN (`waitStrategy: 'poll'`, behind a transaction-pooling PgBouncer) keeps caching as before:
 * there a forgotten key may be replayed from another process's cache until the entry expires (README).
 */
export const FORGET_PREFIX = 'forget:';

/** Subscribes to the store's channel; resolves once the LISTEN is in place. */
export type ListenForNotices = (onNotify: (payload: string) => void) => Promise<Unsubscribe>;

export class ForgetNotices {
  readonly #listen: ListenForNotices | undefined;
  readonly #onForget: (id: string) => void;
  #state: 'idle' | 'starting' | 'listening' | 'closed' = 'idle';
  #unsubscribe: Unsubscribe | undefined;

  /** `listen` is undefined where the store cannot LISTEN; `onForget` gets the forgotten record's notifyId. */
  constructor(listen: ListenForNotices | undefined, onForget: (id: string) => void) {
    this.#listen = listen;
    this.#onForget = onForget;
  }

  /** Whether a completed record may be cached now; the first ask starts listening. */
  canCache(): boolean {
    if (!this.#listen || this.#state === 'listening') return true;
    if (this.#state === 'idle') this.#start(this.#listen);
    return false;
  }

  close(): void {
    this.#state = 'closed';
    void this.#unsubscribe?.().catch(() => undefined);
  }

  #start(listen: ListenForNotices): void {
    this.#state = 'starting';
    listen((payload) => {
      if (payload.startsWith(FORGET_PREFIX)) this.#onForget(payload.slice(FORGET_PREFIX.length));
    }).then(
      (unsubscribe) => {
        if (this.#state === 'closed') return void unsubscribe().catch(() => undefined);
        this.#unsubscribe = unsubscribe;
        this.#state = 'listening';
      },
      (error: unknown) => {
        // Not caching is always safe: the next cacheable record tries again.
        if (this.#state === 'starting') this.#state = 'idle';
        diag.warn('koa-idempotency: could not listen for forgotten records; replays are not cached meanwhile', error);
      },
    );
  }
}
