import { diag } from '@opentelemetry/api';
import { forgetRecord, type ForgetResult } from './operator-records.js';
import type { Find } from './primitives/find.js';
import type { Forget } from './primitives/forget.js';
import type { ReplayCache } from './replay-cache.js';
import type { SqlDatabase, Unsubscribe } from './sql-database.js';
import { notifyId } from './waiters.js';

/**
 * Tells every process about a record an operator forgot (`koa-idempotency forget`), so that none replays it
 * from its replay cache: the next request of the key must run again. The forget sends a NOTIFY on the
 * store's channel, payload `forget:<notifyId>`, which the waiters of the channel ignore.
 *
 * A store starts listening at its first claim (the listening session is opened when first needed, as for
 * waiters), so only a forget in the few milliseconds before that LISTEN is in place can be missed; after a lost
 * listening connection, whose notices may have been missed, the whole replay cache is dropped. A store that
 * cannot LISTEN (`waitStrategy: 'poll'`, behind a transaction-pooling PgBouncer) is not told: there a forgotten
 * key may be replayed from another process's cache until the entry expires (README).
 */
export const FORGET_PREFIX = 'forget:';

export interface ForgetNoticesOptions {
  db: SqlDatabase;
  /** The statements of a forget: the deletion, and the read that tells why nothing was deleted. */
  sql: { forget: Forget; find: Find };
  /** The store's NOTIFY channel (the waiters'). */
  channel: string;
  cache: ReplayCache;
  /** Whether this store listens: it caches replays and can LISTEN. */
  listens: boolean;
}

export class ForgetNotices {
  readonly #options: ForgetNoticesOptions;
  #state: 'idle' | 'starting' | 'listening' | 'closed' = 'idle';
  #unsubscribe: Unsubscribe | undefined;

  constructor(options: ForgetNoticesOptions) {
    this.#options = options;
  }

  /**
   * Deletes the record (operator-records.ts, primitives/forget.ts) with, in the same statement, the notice to
   * every process; drops it from this process's cache at once.
   */
  async forget(scope: string, key: string, force: boolean): Promise<ForgetResult> {
    const { db, sql, cache } = this.#options;
    const id = notifyId(scope, key);
    const result = await forgetRecord(db, sql, { scope, key, force, notice: FORGET_PREFIX + id });
    cache.evict((record) => notifyId(record.scope, record.key) === id);
    return result;
  }

  /** Starts listening, once; called at every claim, so a failed LISTEN is tried again at the next one. */
  listen(): void {
    if (!this.#options.listens || this.#state !== 'idle') return;
    this.#state = 'starting';
    const { db, channel, cache } = this.#options;
    const onNotify = (payload: string) => {
      if (!payload.startsWith(FORGET_PREFIX)) return;
      const id = payload.slice(FORGET_PREFIX.length);
      cache.evict((record) => notifyId(record.scope, record.key) === id);
    };
    db.listen(channel, onNotify, () => cache.clear()).then(
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

  close(): void {
    this.#state = 'closed';
    void this.#unsubscribe?.().catch(() => undefined);
  }
}
