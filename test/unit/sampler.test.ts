import { randomBytes } from 'node:crypto';
import { ROOT_CONTEXT, SamplingDecision, SpanKind, type Attributes } from '@opentelemetry/api';
import { createComposableProbabilitySampler, createCompositeSampler } from '@opentelemetry/sampler-composite';
import { describe, expect, it } from 'vitest';
import { IdempotencyConfigError } from '../../src/index.js';
import { ATTR, idempotencySampler, keyHashAttributes } from '../../src/entries/otel.js';
import { keyHash } from '../../src/telemetry/correlation.js';

/** The intent sampler's decisions, without an SDK; test/system/jaeger-sampling.test.ts checks it end to end in Jaeger. */
const traceId = () => randomBytes(16).toString('hex');
const sampled = (sampler: ReturnType<typeof idempotencySampler>, id: string, attributes: Attributes = {}) =>
  sampler.shouldSample(ROOT_CONTEXT, id, 'POST', SpanKind.SERVER, attributes, []).decision === SamplingDecision.RECORD_AND_SAMPLED;

describe('idempotencySampler', () => {
  it('gives every request with the same key hash the same decision, whatever its trace ID', () => {
    const sampler = idempotencySampler({ ratio: 0.5 });
    for (let intent = 0; intent < 50; intent++) {
      const attributes = keyHashAttributes({ headers: { 'idempotency-key': `key-${intent}` } });
      const decisions = new Set(Array.from({ length: 20 }, () => sampled(sampler, traceId(), attributes)));
      expect(decisions.size).toBe(1);
    }
  });

  it('keeps about the ratio of intents', () => {
    const sampler = idempotencySampler({ ratio: 0.25 });
    const kept = Array.from({ length: 4_000 }, (_, intent) =>
      sampled(sampler, traceId(), keyHashAttributes({ headers: { 'idempotency-key': `intent-${intent}` } })),
    ).filter(Boolean).length;
    expect(kept / 4_000).toBeGreaterThan(0.22);
    expect(kept / 4_000).toBeLessThan(0.28);
  });

  it("decides a request without a key exactly as the SDK's consistent ProbabilitySampler does, tracestate included", () => {
    for (const ratio of [0, 0.1, 0.5, 0.9, 1]) {
      const ours = idempotencySampler({ ratio });
      const sdk = createCompositeSampler(createComposableProbabilitySampler(ratio));
      for (let i = 0; i < 500; i++) {
        const id = traceId();
        const expected = sdk.shouldSample(ROOT_CONTEXT, id, 'POST', SpanKind.SERVER, {}, []);
        const actual = ours.shouldSample(ROOT_CONTEXT, id, 'POST', SpanKind.SERVER, {}, []);
        expect(Number(actual.decision)).toBe(Number(expected.decision));
        expect(actual.traceState?.get('ot')).toBe(expected.traceState?.get('ot'));
      }
    }
  });

  it('writes the key hash as the randomness (ot rv) on every keyed request, and the threshold (ot th) on a kept one', () => {
    const attributes = keyHashAttributes({ headers: { 'idempotency-key': 'order-rv' } });
    const rv = keyHash('order-rv').slice(0, 14);
    const stateAt = (ratio: number) => idempotencySampler({ ratio }).shouldSample(ROOT_CONTEXT, traceId(), 'POST', SpanKind.SERVER, attributes, []).traceState;
    expect(stateAt(1)?.get('ot')).toBe(`th:0;rv:${rv}`);
    expect(stateAt(0)?.get('ot')).toBe(`rv:${rv}`);
    const half = BigInt(`0x${rv}`) >= 1n << 55n;
    expect(stateAt(0.5)?.get('ot')).toBe(half ? `th:8;rv:${rv}` : `rv:${rv}`);
  });

  it('keeps everything at ratio 1 (the default) and nothing at ratio 0, keyed or not', () => {
    const keyed = keyHashAttributes({ headers: { 'idempotency-key': 'some-key' } });
    for (let i = 0; i < 100; i++) {
      expect(sampled(idempotencySampler(), traceId(), keyed)).toBe(true);
      expect(sampled(idempotencySampler(), traceId())).toBe(true);
      expect(sampled(idempotencySampler({ ratio: 0 }), traceId(), keyed)).toBe(false);
      expect(sampled(idempotencySampler({ ratio: 0 }), traceId())).toBe(false);
    }
  });

  it('refuses a ratio outside 0..1 when it is created', () => {
    for (const ratio of [-0.1, 1.5, Number.NaN]) expect(() => idempotencySampler({ ratio })).toThrow(IdempotencyConfigError);
  });
});

describe('keyHashAttributes (for the HTTP instrumentation startIncomingSpanHook)', () => {
  it('sets the hash the middleware records, never the raw key, reading a quoted key as the middleware does', () => {
    expect(keyHashAttributes({ headers: { 'idempotency-key': 'order-123' } })).toEqual({ [ATTR.KEY_HASH]: keyHash('order-123') });
    expect(keyHashAttributes({ headers: { 'idempotency-key': '"order-123"' } })).toEqual({ [ATTR.KEY_HASH]: keyHash('order-123') });
    expect(JSON.stringify(keyHashAttributes({ headers: { 'idempotency-key': 'order-123' } }))).not.toContain('order-123');
  });

  it('sets nothing for a request without a key or with a key the middleware would refuse', () => {
    expect(keyHashAttributes({ headers: {} })).toEqual({});
    expect(keyHashAttributes({ headers: { 'idempotency-key': 'a,b' } })).toEqual({});
    expect(keyHashAttributes({ headers: { 'idempotency-key': 'x'.repeat(1_000) } })).toEqual({});
  });

  it('hashes a key longer than 255 characters that the middleware accepts (maxKeyLength), so its retries are sampled together', () => {
    const longKey = `order-${'k'.repeat(400)}`;
    const request = { headers: { 'idempotency-key': longKey } };
    expect(keyHashAttributes(request, { maxKeyLength: 1_000 })).toEqual({ [ATTR.KEY_HASH]: keyHash(longKey) });
    const sampler = idempotencySampler({ ratio: 0.5 });
    for (let intent = 0; intent < 20; intent++) {
      const attributes = keyHashAttributes({ headers: { 'idempotency-key': `${longKey}-${intent}` } }, { maxKeyLength: 1_000 });
      expect(new Set(Array.from({ length: 10 }, () => sampled(sampler, traceId(), attributes))).size).toBe(1);
    }
    expect(keyHashAttributes(request, { maxKeyLength: 300 })).toEqual({});
  });

  it('reads a custom header name', () => {
    expect(keyHashAttributes({ headers: { 'x-request-key': 'k-1' } }, 'X-Request-Key')).toEqual({ [ATTR.KEY_HASH]: keyHash('k-1') });
    expect(keyHashAttributes({ headers: { 'x-request-key': 'k-1' } }, { headerName: 'X-Request-Key' })).toEqual({ [ATTR.KEY_HASH]: keyHash('k-1') });
  });
});
