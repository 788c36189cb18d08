import type { IdempotencyRecord } from './types.js';

/**
 * A bounded in-process LRU of completed records. A completed record never changes before it expires,
 * so a replay can be answered from memory with no SQL at all; entries are dropped at their expiry.
 * Bounded both by entry count and by stored body bytes.
 */
export class ReplayCache {
  readonly #entries = new Map<string, { record: IdempotencyRecord; expiresAtMs: number; bytes: number }>();
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxEntries: number, maxBytes: number) {
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  get(scope: string, key: string): IdempotencyRecord | undefined {
    const id = cacheId(scope, key);
    const entry = this.#entries.get(id);
    if (!entry) return undefined;
    this.#entries.delete(id);
    if (entry.expiresAtMs <= performance.now()) {
      this.#bytes -= entry.bytes;
      return undefined;
    }
    this.#entries.set(id, entry); // most recently used goes last
    return entry.record;
  }

  /** Caches a completed record; `expiresInMs` comes from the database clock, not this host's. */
  set(record: IdempotencyRecord, expiresInMs: number): void {
    if (this.#maxEntries === 0 || record.status !== 'completed' || expiresInMs <= 0) return;
    const bytes = (record.response?.body?.byteLength ?? 0) + 512;
    if (bytes > this.#maxBytes) return;
    const id = cacheId(record.scope, record.key);
    const previous = this.#entries.get(id);
    if (previous) {
      this.#entries.delete(id);
      this.#bytes -= previous.bytes;
    }
    this.#entries.set(id, { record, expiresAtMs: performance.now() + expiresInMs, bytes });
    this.#bytes += bytes;
    for (const [oldest, entry] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(oldest);
      this.#bytes -= entry.bytes;
    }
  }

  /** Drops the entries `matches` picks (a record an operator forgot, known by its notifyId only). */
  evict(matches: (record: IdempotencyRecord) => boolean): void {
    for (const [id, entry] of this.#entries) {
      if (!matches(entry.record)) continue;
      this.#entries.delete(id);
      this.#bytes -= entry.bytes;
    }
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }
}

function cacheId(scope: string, key: string): string {
  return `${scope.length}:${scope}${key}`;
}
