import { describe, expect, it } from 'vitest';
import { UnfingerprintableBodyError } from '../../src/errors.js';
import { fingerprint, type FingerprintInput } from '../../src/middleware/fingerprint.js';
import { fingerprintParts } from '../../src/middleware/fingerprint-parts.js';

const base: FingerprintInput = { method: 'POST', path: '/payments', querystring: '', headers: {}, body: { amount: 5, currency: 'EUR' } };

describe('fingerprint()', () => {
  it('ignores the order of JSON members and of query parameters', () => {
    expect(fingerprint({ ...base, body: { currency: 'EUR', amount: 5 } })).toBe(fingerprint(base));
    expect(fingerprint({ ...base, querystring: 'b=2&a=1' })).toBe(fingerprint({ ...base, querystring: 'a=1&b=2' }));
  });

  it.each<[string, Partial<FingerprintInput>]>([
    ['method', { method: 'PATCH' }],
    ['path', { path: '/payments/1' }],
    ['query', { querystring: 'dry_run=1' }],
    ['body value', { body: { amount: 6, currency: 'EUR' } }],
    ['body type', { body: { amount: '5', currency: 'EUR' } }],
    ['extra member', { body: { amount: 5, currency: 'EUR', note: null } }],
    ['allow-listed header', { headers: { 'x-tenant-region': 'eu' } }],
  ])('changes when the %s changes', (_what, change) => {
    expect(fingerprint({ ...base, ...change })).not.toBe(fingerprint(base));
  });

  it('keeps a JSON string apart from the same text, and an empty string apart from no body', () => {
    expect(fingerprint({ ...base, mediaType: 'application/json', body: 'abc' })).not.toBe(fingerprint({ ...base, mediaType: 'text/plain', body: 'abc' }));
    expect(fingerprint({ ...base, body: '' })).not.toBe(fingerprint({ ...base, body: undefined }));
  });

  it('hashes a text body as sent', () => {
    expect(fingerprint({ ...base, body: 'a=1' })).not.toBe(fingerprint({ ...base, body: 'a=2' }));
  });

  it('throws a typed error for a body that cannot be canonicalised', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(() => fingerprint({ ...base, body: deep })).toThrow(/canonicalised/);
    expect(() => fingerprint({ ...base, body: { text: '\ud800' } })).toThrow(/canonicalised/);
  });
});

describe('the per-part digests of a body nested to the edge of the stack', () => {
  const nested = (depth: number): FingerprintInput => ({
    method: 'POST',
    path: '/p',
    querystring: '',
    headers: {},
    body: JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown,
    mediaType: 'application/json',
  });
  const fingerprints = (depth: number) => {
    try {
      fingerprint(nested(depth));
      return true;
    } catch {
      return false;
    }
  };

  it('refuse it as unfingerprintable (400 body-invalid), never with a RangeError (a 500), where the fingerprint itself just fits', () => {
    // The deepest body the fingerprint still canonicalises: the per-part walk goes a few frames deeper.
    let fits = 1;
    let fails = 1 << 20;
    while (fails - fits > 1) {
      const middle = Math.floor((fits + fails) / 2);
      if (fingerprints(middle)) fits = middle;
      else fails = middle;
    }
    for (const depth of [fits - 2, fits - 1, fits]) {
      try {
        fingerprintParts(nested(depth), 'salt');
      } catch (error) {
        expect(error, `depth ${depth}`).toBeInstanceOf(UnfingerprintableBodyError);
      }
    }
  });
});
