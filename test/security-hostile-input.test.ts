import fc from 'fast-check';
import { context, propagation } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_KEY_LENGTH, idempotency, IdempotencyConfigError } from '../src/index.js';
import { PostgresStore } from '../src/entries/postgres.js';
import { BAGGAGE_CORRELATION_ID } from '../src/entries/otel.js';
import { readKey } from '../src/key.js';
import { upstreamCorrelationId } from '../src/telemetry/correlation.js';

/** SECURITY.md's promises on hostile input: identifiers that cannot inject SQL or split headers, parsers a hostile input cannot make slow. */

describe('identifiers', () => {
  it('refuses any table or schema name that is not a plain lower-case identifier, an injection included', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('x"; DROP TABLE users; --', 'a b', 'A', 'a-b', 'a.b', "a'b", 'é', 'x'.repeat(49))), (name) => {
        fc.pre(!/^[a-z_][a-z0-9_]{0,47}$/.test(name));
        expect(() => new PostgresStore({ database: {} as never, table: name })).toThrow(IdempotencyConfigError);
        expect(() => new PostgresStore({ database: {} as never, schema: name })).toThrow(IdempotencyConfigError);
      }),
      { numRuns: 1_000 },
    );
  });

  it('refuses a header name that could split a response or a request', () => {
    for (const headerName of ['Idempotency-Key\r\nX-Evil: 1', 'Idempotency Key', 'Idempotency-Key:', '']) {
      expect(() => idempotency({ store: { claim: async () => undefined } as never, headerName })).toThrow(IdempotencyConfigError);
    }
  });
});

describe('parsers a hostile input cannot make slow', () => {
  /**
   * Linear parsers answer a megabyte in tens of milliseconds; a backtracking one would take minutes. The
   * bound is generous because the machine running the tests may be busy.
   */
  const BOUND_MS = 2_000;
  const adversarial = (n: number) => [
    '"' + '\\'.repeat(n),
    '"' + '\\"'.repeat(n),
    '"' + 'a'.repeat(n),
    'a'.repeat(n) + '\x00',
    ','.repeat(n),
    '"' + ' '.repeat(n) + '\x01"',
    ' '.repeat(n) + 'a b',
  ];

  it.each([
    ['the default key length', DEFAULT_MAX_KEY_LENGTH],
    ['a raised key length of 1,000,000', 1_000_000],
  ])('reads adversarial key headers of up to 1 MB in bounded time with %s', (_label, maxKeyLength) => {
    for (const raw of adversarial(1_000_000)) {
      const startedMs = performance.now();
      const reading = readKey(raw, { minKeyLength: 1, maxKeyLength });
      expect(performance.now() - startedMs).toBeLessThan(BOUND_MS);
      expect(reading.kind).toBe('invalid');
    }
  });

  it('checks an upstream correlation ID from hostile baggage in bounded time', () => {
    for (const value of ['a'.repeat(1_000_000), 'a'.repeat(1_000_000) + '!', '.:'.repeat(500_000)]) {
      const baggage = propagation.createBaggage({ [BAGGAGE_CORRELATION_ID]: { value } });
      const startedMs = performance.now();
      expect(upstreamCorrelationId(propagation.setBaggage(context.active(), baggage))).toBeUndefined();
      expect(performance.now() - startedMs).toBeLessThan(BOUND_MS);
    }
  });

  it('checks identifiers in bounded time', () => {
    for (const value of ['a'.repeat(1_000_000), 'a'.repeat(1_000_000) + '"']) {
      const startedMs = performance.now();
      expect(() => new PostgresStore({ database: {} as never, table: value })).toThrow(IdempotencyConfigError);
      expect(performance.now() - startedMs).toBeLessThan(BOUND_MS);
    }
  });
});
