import { randomBytes } from 'node:crypto';
import { FencedError, IdempotencyError } from '../errors.js';
import {
  RECORD_STATUS,
  type ChangeWatch,
  type ClaimRequest,
  type ClaimResult,
  type Completion,
  type IdempotencyRecord,
  type IdempotencyStore,
  type Lease,
  type StoredResponse,
  type TransactionalClaim,
} from './types.js';

/** A record as kept in memory: times as epoch milliseconds, from `Date.now()` (so fake timers drive expiry). */
interface Entry {
  record: Omit<IdempotencyRecord, 'leaseRemainingMs' | 'ageMs' | 'createdAt' | 'completedAt' | 'expiresAt'>;
  createdAtMs: number;
  completedAtMs: number | null;
  expiresAtMs: number;
  leaseExpiresAtMs: number | null;
}

/**
 * The store contract kept in one process's memory, in lease mode only: for the unit tests of an API that
 * mounts the middleware (no database to start), and as the smallest reference implementation of the
 * contract (it passes `koa-idempotency/conformance` with `transactions: false`). Not for production: two
 * processes never see each other's keys, and a restart forgets every key. Expired records are dropped when
 * their key is next touched, so memory holds at most the keys used within `ttlSeconds`.
 */
export class MemoryStore implements IdempotencyStore {
  readonly #entries = new Map<string, Entry>();
  readonly #watchers = new Map<string, Set<() => void>>();

  async claim(request: ClaimRequest): Promise<ClaimResult> {
    const id = entryId(request.scope, request.key);
    const nowMs = Date.now();
    const entry = this.#live(id, nowMs);
    if (!entry) {
      const created = newEntry(request, nowMs);
      this.#entries.set(id, created);
      return { kind: 'claimed', lease: leaseOf(created, request.ttlSeconds), record: snapshot(created, nowMs) };
    }
    const lapsed = entry.record.status === RECORD_STATUS.IN_PROGRESS && (entry.leaseExpiresAtMs ?? 0) <= nowMs;
    // Only the same request takes over a lapsed lease: another body under the key must see the record (422).
    if (!lapsed || entry.record.fingerprint !== request.fingerprint) return { kind: 'existing', record: snapshot(entry, nowMs) };
    entry.record.fence = (BigInt(entry.record.fence) + 1n).toString();
    entry.record.attempt += 1;
    entry.record.traceparent = request.traceparent ?? entry.record.traceparent;
    entry.leaseExpiresAtMs = nowMs + request.leaseMs;
    entry.expiresAtMs = nowMs + request.ttlSeconds * 1000;
    return { kind: 'claimed', lease: leaseOf(entry, request.ttlSeconds), record: snapshot(entry, nowMs) };
  }

  /** Rejects: a transaction spanning the handler's writes and the record needs a database (use `PostgresStore`). */
  /** No transactions: idempotency({ transactional: true }) refuses this store. */
  readonly transactions = false;

  async claimInTransaction(): Promise<TransactionalClaim> {
    throw new IdempotencyError('MemoryStore has no transactions: use lease mode (transactional: false), or PostgresStore');
  }

  async complete(lease: Lease, completion: Completion): Promise<void> {
    const entry = this.#owned(lease);
    const nowMs = Date.now();
    entry.record.status = RECORD_STATUS.COMPLETED;
    entry.record.replayable = completion.replayable;
    entry.record.response = completion.replayable ? copyResponse(completion.response) : null;
    entry.completedAtMs = nowMs;
    entry.leaseExpiresAtMs = null;
    // Expiry counts from the completion, as in PostgresStore: a slow handler never completes an expired record.
    entry.expiresAtMs = nowMs + lease.ttlSeconds * 1000;
    this.#changed(lease.scope, lease.key);
  }

  async release(lease: Lease): Promise<void> {
    const id = entryId(lease.scope, lease.key);
    const entry = this.#entries.get(id);
    // Taken over (the new owner's record stays) or completed (the retry replays it): as PostgresStore, nothing goes.
    if (entry?.record.fence !== lease.fence || entry.record.status !== RECORD_STATUS.IN_PROGRESS) return;
    this.#entries.delete(id);
    this.#changed(lease.scope, lease.key);
  }

  async renewLease(lease: Lease, leaseMs: number): Promise<boolean> {
    const entry = this.#entries.get(entryId(lease.scope, lease.key));
    if (entry?.record.fence !== lease.fence || entry.record.status !== RECORD_STATUS.IN_PROGRESS) return false;
    entry.leaseExpiresAtMs = Date.now() + leaseMs;
    // The record outlives its lease, as in PostgresStore: a handler slower than ttlSeconds keeps its key.
    entry.expiresAtMs = Math.max(entry.expiresAtMs, entry.leaseExpiresAtMs);
    return true;
  }

  async saveStep(lease: Lease, name: string, result: unknown): Promise<void> {
    const entry = this.#owned(lease);
    // A completed record's steps are final, as in PostgresStore: a step recorded after the completion is refused.
    if (entry.record.status !== RECORD_STATUS.IN_PROGRESS) throw new FencedError(lease.fence);
    // Kept as JSON, as the Postgres store's jsonb keeps it: a retry reads back what JSON carries, nothing more.
    entry.record.steps = { ...entry.record.steps, [name]: JSON.parse(JSON.stringify(result ?? null)) as unknown };
  }

  async watch(scope: string, key: string): Promise<ChangeWatch> {
    const id = entryId(scope, key);
    const watchers = this.#watchers.get(id) ?? new Set<() => void>();
    this.#watchers.set(id, watchers);
    // A change between watch() and next() is not lost: it is kept until next() asks.
    let pending = false;
    let wake: (() => void) | undefined;
    const onChange = () => {
      pending = true;
      wake?.();
    };
    watchers.add(onChange);
    return {
      next: (timeoutMs) =>
        new Promise((resolve) => {
          if (pending) {
            pending = false;
            return resolve('changed');
          }
          const timer = setTimeout(() => finish('timeout'), timeoutMs);
          const finish = (outcome: 'changed' | 'timeout') => {
            clearTimeout(timer);
            wake = undefined;
            pending = false;
            resolve(outcome);
          };
          wake = () => finish('changed');
        }),
      close: () => {
        watchers.delete(onChange);
        if (watchers.size === 0 && this.#watchers.get(id) === watchers) this.#watchers.delete(id);
      },
    };
  }

  /** The record of (scope, key), or undefined when there is none or it has expired. */
  async find(scope: string, key: string): Promise<IdempotencyRecord | undefined> {
    const nowMs = Date.now();
    const entry = this.#live(entryId(scope, key), nowMs);
    return entry && snapshot(entry, nowMs);
  }

  #live(id: string, nowMs: number): Entry | undefined {
    const entry = this.#entries.get(id);
    if (entry && entry.expiresAtMs <= nowMs) {
      this.#entries.delete(id);
      return undefined;
    }
    return entry;
  }

  #owned(lease: Lease): Entry {
    const entry = this.#entries.get(entryId(lease.scope, lease.key));
    if (entry?.record.fence !== lease.fence) throw new FencedError(lease.fence);
    return entry;
  }

  #changed(scope: string, key: string): void {
    for (const onChange of this.#watchers.get(entryId(scope, key)) ?? []) onChange();
  }
}

// JSON of the pair: no scope and key can join into another pair's id.
const entryId = (scope: string, key: string) => JSON.stringify([scope, key]);

function newEntry(request: ClaimRequest, nowMs: number): Entry {
  return {
    record: {
      scope: request.scope,
      key: request.key,
      status: RECORD_STATUS.IN_PROGRESS,
      fingerprint: request.fingerprint,
      fingerprintVersion: request.fingerprintVersion,
      fence: randomFence(),
      attempt: 1,
      steps: {},
      replayable: null,
      response: null,
      correlationId: request.correlationId ?? null,
      traceparent: request.traceparent ?? null,
    },
    createdAtMs: nowMs,
    completedAtMs: null,
    expiresAtMs: nowMs + request.ttlSeconds * 1000,
    leaseExpiresAtMs: nowMs + request.leaseMs,
  };
}

/** A random 62-bit token, as PostgresStore draws: a record created anew never reuses an old owner's fence. */
function randomFence(): string {
  return (randomBytes(8).readBigUInt64BE() >> 2n).toString();
}

function leaseOf(entry: Entry, ttlSeconds: number): Lease {
  return { scope: entry.record.scope, key: entry.record.key, fence: entry.record.fence, ttlSeconds };
}

/** A copy: a caller changing what it was given must not change the stored record. */
function snapshot(entry: Entry, nowMs: number): IdempotencyRecord {
  const { record } = entry;
  return {
    ...record,
    steps: structuredClone(record.steps),
    response: record.response && copyResponse(record.response),
    createdAt: new Date(entry.createdAtMs),
    completedAt: entry.completedAtMs === null ? null : new Date(entry.completedAtMs),
    expiresAt: new Date(entry.expiresAtMs),
    leaseRemainingMs: entry.leaseExpiresAtMs === null ? 0 : Math.max(0, entry.leaseExpiresAtMs - nowMs),
    ageMs: nowMs - entry.createdAtMs,
  };
}

function copyResponse(response: StoredResponse): StoredResponse {
  const headers = Object.fromEntries(Object.entries(response.headers).map(([name, value]) => [name, Array.isArray(value) ? [...value] : value]));
  return { ...response, headers, body: response.body && Buffer.from(response.body) };
}
