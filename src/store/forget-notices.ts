import { diag } from '@opentelemetry/api';
import type { Unsubscribe } from './sql-database.js';

/**
 * Tells every process about a record an operator forgot (`koa-idempotency forget`), so that none replays it
 * from its replay cache: the next request of the key must run again. The forget sends a NOTIFY on the
 * store's channel, payload `forget:<notifyId>`, which the waiters of the channel ignore.
 *
 * A store starts listening at its first claim (the listening session is opened when first needed, as for
 * waiters), so only a forget in the few milliseconds before that LISTEN is in place can be missed. A store that
 * cannot LISTEN (`waitStrategy: 'poll'`, behind a transaction-pooling PgBouncer) is not told: there a forgotten
 * key may be replayed from another process's cache until the entry expires (README).
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

  /** Starts listening, once; called at every claim, so a failed LISTEN is tried again at the next one. */
  listen(): void {
    if (this.#listen && this.#state === 'idle') this.#start(this.#listen);
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
        if (this.#state === 'starting') this.#state = 'idle';
        diag.warn('koa-idempotency: could not listen for forgotten records; a record forgotten meanwhile may be replayed from this process until it expires', error);
      },
    );
  }
}
