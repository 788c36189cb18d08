/**
 * Reading the Idempotency-Key header.
 *
 * The IETF draft (draft-ietf-httpapi-idempotency-key-header, section 2.1) defines the value as a
 * Structured Field String: `"` printable ASCII `"`, with `\"` and `\\` escapes. Most clients (and
 * Stripe) send a bare token instead, so both forms are accepted. A comma outside a quoted string means a
 * proxy merged two header lines into one (RFC 9110 section 5.3): that is two keys, so it is refused.
 */

export type KeyReading = { kind: 'absent' } | { kind: 'valid'; key: string } | { kind: 'invalid'; reason: string };

export interface KeyRules {
  minKeyLength: number;
  maxKeyLength: number;
}

const PRINTABLE_NO_SPACE = /^[\x21-\x7e]+$/;
const QUOTED_PRINTABLE = /^[\x20-\x7e]*$/;

/**
 * Parses one header value. Only linear, anchored regular expressions are used, so a hostile header
 * cannot make this slow; the length is checked before any other work.
 */
export function readKey(raw: string | string[] | undefined, rules: KeyRules): KeyReading {
  if (raw === undefined) return { kind: 'absent' };
  if (Array.isArray(raw)) return { kind: 'invalid', reason: 'the header was sent more than once' };
  // A quoted form carries two quotes and may escape every character, so allow for that before parsing.
  if (raw.length > rules.maxKeyLength * 2 + 2) return tooLong(rules);
  const value = raw.trim();
  if (value.length === 0) return { kind: 'invalid', reason: 'the header is empty' };

  const key = value.startsWith('"') ? unquote(value) : value;
  if (typeof key !== 'string') return key;
  if (key.length < rules.minKeyLength) {
    return { kind: 'invalid', reason: `the key is shorter than ${rules.minKeyLength} characters` };
  }
  if (key.length > rules.maxKeyLength) return tooLong(rules);
  if (!value.startsWith('"')) {
    if (key.includes(',')) return { kind: 'invalid', reason: 'the header holds a comma: several keys were merged into one header' };
    if (!PRINTABLE_NO_SPACE.test(key)) return { kind: 'invalid', reason: 'the key must be printable ASCII without spaces' };
  }
  return { kind: 'valid', key };
}

function tooLong(rules: KeyRules): KeyReading {
  return { kind: 'invalid', reason: `the key is longer than ${rules.maxKeyLength} characters` };
}

/** Decodes an sf-string (RFC 8941 section 3.3.3). Returns the key, or an invalid reading. */
function unquote(value: string): string | KeyReading {
  let key = '';
  for (let i = 1; i < value.length; i++) {
    const char = value[i]!;
    if (char === '\\') {
      const next = value[i + 1];
      if (next !== '"' && next !== '\\') return { kind: 'invalid', reason: 'the quoted key holds an invalid escape' };
      key += next;
      i++;
    } else if (char === '"') {
      if (i !== value.length - 1) return { kind: 'invalid', reason: 'the header holds more than one quoted string' };
      if (!QUOTED_PRINTABLE.test(key)) return { kind: 'invalid', reason: 'the key must be printable ASCII' };
      return key;
    } else {
      key += char;
    }
  }
  return { kind: 'invalid', reason: 'the quoted key is not closed' };
}
