import { describe, expect, it } from 'vitest';
import { readKey } from '../../src/key.js';

const rules = { minKeyLength: 1, maxKeyLength: 255 };

describe('readKey()', () => {
  it('reads a bare token', () => {
    expect(readKey('8e03978e-40d5-43e8-bc93-6894a57f9324', rules)).toEqual({ kind: 'valid', key: '8e03978e-40d5-43e8-bc93-6894a57f9324' });
  });

  it('reads the quoted sf-string form of the IETF draft, with escapes and spaces', () => {
    expect(readKey('"abc"', rules)).toEqual({ kind: 'valid', key: 'abc' });
    expect(readKey('"a \\"b\\" \\\\c"', rules)).toEqual({ kind: 'valid', key: 'a "b" \\c' });
  });

  it('trims surrounding white space (optional whitespace around a field value)', () => {
    expect(readKey('  key-1 ', rules)).toEqual({ kind: 'valid', key: 'key-1' });
  });

  it('reports an absent header', () => {
    expect(readKey(undefined, rules)).toEqual({ kind: 'absent' });
  });

  it.each([
    ['', 'empty'],
    ['   ', 'blank'],
    ['a,b', 'merged headers'],
    ['a b', 'inner space'],
    ['caf\u00e9', 'non-ASCII'],
    ['a\tb', 'control character'],
    ['"unterminated', 'unterminated quote'],
    ['"a"b"', 'two quoted strings'],
    ['"a\\nb"', 'invalid escape'],
    ['"\u00e9"', 'non-ASCII in quotes'],
    ['k'.repeat(256), 'too long'],
  ])('refuses %j (%s)', (value) => {
    expect(readKey(value, rules).kind).toBe('invalid');
  });

  it('refuses a header sent twice (an array from Node)', () => {
    expect(readKey(['a', 'b'], rules).kind).toBe('invalid');
  });

  it('honours a configured length range', () => {
    expect(readKey('short', { minKeyLength: 8, maxKeyLength: 16 }).kind).toBe('invalid');
    expect(readKey('just-right', { minKeyLength: 8, maxKeyLength: 16 }).kind).toBe('valid');
    expect(readKey('x'.repeat(17), { minKeyLength: 8, maxKeyLength: 16 }).kind).toBe('invalid');
  });

  it('answers quickly for a hostile megabyte-long header', () => {
    const started = performance.now();
    expect(readKey('"' + '\\"'.repeat(500_000), rules).kind).toBe('invalid');
    expect(readKey('a'.repeat(1_000_000) + ',', rules).kind).toBe('invalid');
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});
