import type { IncomingHttpHeaders } from 'node:http';
import type { Attributes } from '@opentelemetry/api';
import { DEFAULT_HEADER_NAME, DEFAULT_MAX_KEY_LENGTH } from '../protocol.js';
import { readKey } from '../key.js';
import { positiveInteger } from '../validation.js';
import { keyHash } from './correlation.js';
import { ATTR } from './names.js';

/** Where the middleware reads its key, when it is configured away from the defaults. */
export interface KeyHashAttributesOptions {
  /** The middleware's `headerName`. @default 'Idempotency-Key' */
  headerName?: string;
  /**
   * The middleware's `maxKeyLength`: a longer key is refused by the middleware, so it gets no hash here
   * either. It must match the middleware's, or the retries of a long key are sampled apart. @default 255
   */
  maxKeyLength?: number;
}

/**
 * `{ 'idempotency.key_hash': … }` for a request that carries an idempotency key, else `{}`: for the HTTP
 * instrumentation's `startIncomingSpanHook`, so the hash is on the server span when it starts, where
 * samplers see it. The header is read as the middleware reads it (a quoted key is unquoted, the same
 * length limit), so the hash is the one the middleware sets; a header it would refuse gets none (that
 * request falls back to the trace ID). Pass the middleware's `headerName` and `maxKeyLength` if they are
 * not the defaults (a bare string is read as the header name, as before options existed).
 */
export function keyHashAttributes(request: { headers: IncomingHttpHeaders }, options: KeyHashAttributesOptions | string = {}): Attributes {
  const { headerName = DEFAULT_HEADER_NAME, maxKeyLength = DEFAULT_MAX_KEY_LENGTH } = typeof options === 'string' ? { headerName: options } : options;
  const rules = { minKeyLength: 1, maxKeyLength: positiveInteger(maxKeyLength, 'keyHashAttributes: maxKeyLength') };
  const reading = readKey(request.headers[headerName.toLowerCase()], rules);
  return reading.kind === 'valid' ? { [ATTR.KEY_HASH]: keyHash(reading.key) } : {};
}
