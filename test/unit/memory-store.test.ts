import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeConformance } from '../../src/conformance/index.js';
import { MemoryStore } from '../../src/index.js';

/** MemoryStore is held to the same contract as PostgresStore: the conformance suite, in lease mode. */
storeConformance({
  name: 'MemoryStore conformance',
  describe,
  it,
  beforeAll,
  afterAll,
  open: async () => ({ store: new MemoryStore(), close: async () => undefined }),
  capabilities: { transactions: false, leasePrecisionMs: 20, ttlPrecisionMs: 50, wakeWithinMs: 100 },
});

describe('MemoryStore', () => {
  const request = { scope: 's', key: 'k', fingerprint: 'f', fingerprintVersion: 1, leaseMs: 1_000, ttlSeconds: 60 };

  it('hands out copies: a caller changing a record it was given does not change the stored one', async () => {
    const store = new MemoryStore();
    const claim = await store.claim(request);
    if (claim.kind !== 'claimed') throw new Error(`claimed expected, got ${claim.kind}`);
    const body = Buffer.from('{"ok":true}');
    await store.complete(claim.lease, { replayable: true, response: { status: 201, headers: { vary: ['a', 'b'] }, body } });
    body.write('XX');
    const found = (await store.find('s', 'k'))!;
    found.response!.body!.write('YY');
    (found.response!.headers.vary as string[]).push('c');
    const again = (await store.find('s', 'k'))!;
    expect([again.response!.body!.toString(), again.response!.headers.vary]).toEqual(['{"ok":true}', ['a', 'b']]);
  });

  it('keeps two scopes whose names would join into the same string apart', async () => {
    const store = new MemoryStore();
    expect((await store.claim({ ...request, scope: 'a:b', key: 'c' })).kind).toBe('claimed');
    expect((await store.claim({ ...request, scope: 'a', key: 'b:c' })).kind).toBe('claimed');
  });
});
