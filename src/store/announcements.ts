import { diag } from '@opentelemetry/api';

/** How a waiter announces itself on the listening session (primitives/waiter-announcement.ts). */
export interface Announcer {
  /**
   * Takes the key's shared lock without waiting, unless `session` (a backend pid) holds it already. Resolves
   * to the session that holds it, or null when a completion of the key holds the lock right now.
   */
  announce(scope: string, key: string, session: number | null): Promise<number | null>;
  /** Releases the lock, on `session` only: a later session never took it. */
  withdraw(scope: string, key: string, session: number): Promise<unknown>;
}

interface Entry {
  scope: string;
  key: string;
  /** The backend pid whose session holds this waiter's lock; null while none does. */
  session: number | null;
  /** This entry's statements, one after another: a re-announcement and a withdrawal never cross. */
  turn: Promise<unknown>;
}

/**
 * The announcements of one store's waiters, at most `max` at once: each holds a slot of Postgres' shared
 * lock table for as long as it waits. An entry remembers the session its lock is on, so that after the
 * listening connection was replaced it is announced again there, and a withdrawal never releases a lock
 * that another waiter of the same key took on the new session. (A pid reused by the new session could
 * still make one withdrawal release a lock of its key too early: that waiter then misses a NOTIFY and
 * learns of the change by its own re-reads.)
 */
export class Announcements {
  readonly #announcer: Announcer;
  readonly #max: number;
  readonly #live = new Set<Entry>();

  constructor(announcer: Announcer, max: number) {
    this.#announcer = announcer;
    this.#max = max;
  }

  /**
   * Announces a waiter of one key. Resolves to its withdrawal (idempotent), or undefined when it is not
   * announced: past the cap, its lock held by a completion committing now, or the statement failed.
   */
  async announce(scope: string, key: string): Promise<(() => void) | undefined> {
    if (this.#live.size >= this.#max) return undefined;
    const entry: Entry = { scope, key, session: null, turn: Promise.resolve() };
    this.#live.add(entry);
    await this.#announce(entry);
    if (entry.session === null) {
      this.#live.delete(entry);
      return undefined;
    }
    return () => {
      if (!this.#live.delete(entry)) return;
      entry.turn = entry.turn.then(() => (entry.session === null ? undefined : this.#announcer.withdraw(scope, key, entry.session))).catch(() => undefined);
    };
  }

  /** After the listening connection was replaced: every live announcement again, on the new session. */
  reannounce(): void {
    for (const entry of this.#live) void this.#announce(entry);
  }

  #announce(entry: Entry): Promise<void> {
    const announced = entry.turn
      .then(() => this.#announcer.announce(entry.scope, entry.key, entry.session))
      .then(
        (session) => {
          entry.session = session;
        },
        (error: unknown) => {
          entry.session = null;
          diag.warn('koa-idempotency: a waiting duplicate could not announce itself; it learns of a change by re-reading the record', error);
        },
      );
    entry.turn = announced;
    return announced;
  }
}
