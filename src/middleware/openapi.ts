import { MAX_POINTER_DEPTH, MAX_POINTERS } from './fingerprint-parts.js';
import { DEFAULT_HEADER_NAME, DEFAULT_MAX_KEY_LENGTH, PROBLEMS, problemType, REPLAYED_HEADER, type ProblemName } from '../protocol.js';

/**
 * OpenAPI 3.1 components describing the contract the middleware keeps, built from the problem catalogue
 * (protocol.ts), so that the document and the answers cannot drift apart. `openapi/components.json` in the
 * package is this document (`npm run openapi` writes it; a test keeps it equal and validates it); an API
 * document uses them by `$ref` (README).
 */

export const OPENAPI_DOCUMENT_PATH = 'openapi/components.json';

/** Component names of each problem's response and schema: `KeyReusedProblem`, `KeyReused`. */
function componentName(name: ProblemName): string {
  return name[0]!.toUpperCase() + name.slice(1);
}

/** A `detail` as the middleware words it, for each problem's example. */
const EXAMPLE_DETAILS: Record<ProblemName, string> = {
  keyMissing: 'This endpoint requires an Idempotency-Key header (a unique value per operation, reused on retries).',
  keyInvalid: 'The Idempotency-Key header is invalid: the header holds a comma: several keys were merged into one header.',
  bodyInvalid: 'the JSON body cannot be canonicalised: lone surrogate in a string',
  bodyNotRead: 'This endpoint does not read a application/xml body before checking the Idempotency-Key, so a retry could not be told apart from a different request.',
  inProgress: 'A request with this Idempotency-Key is still being processed. Retry after the Retry-After delay.',
  notReplayable: 'The request was executed, but its response could not be stored. Fetch the resulting resource instead of retrying.',
  keyReused: 'This Idempotency-Key was first used with a different request (it differs in: /amount). Use a new key for a new request.',
  storeUnavailable: 'The idempotency store could not be reached, so the request was not processed. Retry later with the same Idempotency-Key.',
  requestFailed: 'The response could not be stored. Nothing was kept for this Idempotency-Key: a retry with the same key runs the request again.',
};

/** Problems answered with a Retry-After header. */
const WITH_RETRY_AFTER: ReadonlySet<ProblemName> = new Set(['inProgress', 'storeUnavailable']);

/**
 * The key as the draft defines it (an sf-string, section 2.1) or as most clients send it (a bare token of
 * printable ASCII without spaces or commas, not starting with a quote), up to the default `maxKeyLength`.
 */
const KEY_PATTERN = '^(?:"(?:[\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]|\\\\["\\\\])+"|[\\x21\\x23-\\x2B\\x2D-\\x7E][\\x21-\\x2B\\x2D-\\x7E]*)$';

const PROBLEM_SCHEMA = {
  type: 'object',
  description: 'RFC 9457 problem details, as koa-idempotency answers them (media type application/problem+json).',
  required: ['type', 'title', 'status', 'detail', 'instance', 'retryable'],
  properties: {
    type: { type: 'string', format: 'uri', description: 'Stable URN of the problem type: switch on it.' },
    title: { type: 'string', description: 'Fixed per type.' },
    status: { type: 'integer', minimum: 400, maximum: 599 },
    detail: { type: 'string', description: 'What happened to this request, and what to do.' },
    instance: {
      type: 'string',
      format: 'uri',
      pattern: '^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[48][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$',
      description: 'A fresh ID of this occurrence: quote it to the API operator, who finds the trace and the record from it.',
    },
    retryable: { type: 'boolean', description: 'Whether a retry with the same Idempotency-Key can succeed.' },
    idempotency_key: { type: 'string', description: 'The key as sent; only where the server enables includeKeyInProblems.' },
  },
};

/** The 422's extension member (fingerprint-parts.ts): what differed, never a value. */
const DIFFERENCES_SCHEMA = {
  type: 'object',
  description: 'What differs from the request the key was first used for; absent for a record written before this was stored. Never holds a value.',
  required: ['parts'],
  properties: {
    parts: {
      type: 'array',
      items: { type: 'string', pattern: '^(method|path|query|content-type|body|header:[a-z0-9-]+)$' },
      description: 'method, path, query, content-type, header:<name> (a fingerprinted header), body.',
    },
    members: {
      type: 'array',
      maxItems: MAX_POINTERS,
      items: { type: 'string', format: 'json-pointer' },
      description: `JSON Pointers of the body members that differ (added, removed or changed), down to depth ${MAX_POINTER_DEPTH}; absent when the body is not JSON or has too many members.`,
    },
  },
};

function problemComponents() {
  const schemas: Record<string, unknown> = { Problem: PROBLEM_SCHEMA };
  const responses: Record<string, unknown> = {};
  for (const name of Object.keys(PROBLEMS) as ProblemName[]) {
    const { slug, status, title, retryable } = PROBLEMS[name];
    const component = componentName(name);
    const properties = { type: { const: problemType(name) }, title: { const: title }, status: { const: status }, retryable: { const: retryable } };
    schemas[`${component}Problem`] = {
      allOf: [
        { $ref: '#/components/schemas/Problem' },
        { type: 'object', properties: name === 'keyReused' ? { ...properties, differences: DIFFERENCES_SCHEMA } : properties },
      ],
    };
    const example = {
      type: problemType(name),
      title,
      status,
      detail: EXAMPLE_DETAILS[name],
      instance: 'urn:uuid:0b1c9a4e-7f3d-8a21-9c4b-5e6f7a8b9c0d',
      retryable,
      ...(name === 'keyReused' ? { differences: { parts: ['body'], members: ['/amount'] } } : {}),
    };
    responses[component] = {
      description: `${status} ${slug}: ${title}.${retryable ? ' Retry with the same Idempotency-Key.' : ' Retrying with the same key does not change this answer.'}`,
      ...(WITH_RETRY_AFTER.has(name) ? { headers: { 'Retry-After': { $ref: '#/components/headers/RetryAfter' } } } : {}),
      content: { 'application/problem+json': { schema: { $ref: `#/components/schemas/${component}Problem` }, example } },
    };
  }
  return { schemas, responses };
}

/**
 * The whole document. OpenAPI 3.1 allows one that holds only components; an empty `paths` is kept all the
 * same, since some parsers (swagger-parser among them) refuse a document without paths or webhooks.
 */
export function openApiDocument() {
  const { schemas, responses } = problemComponents();
  return {
    openapi: '3.1.0',
    info: {
      title: 'koa-idempotency components',
      version: '1',
      description:
        'The Idempotency-Key request header, the replay marker and the problem answers of koa-idempotency (draft-ietf-httpapi-idempotency-key-header), to $ref from an API document.',
    },
    paths: {},
    components: {
      parameters: {
        IdempotencyKey: {
          name: DEFAULT_HEADER_NAME,
          in: 'header',
          required: false,
          description:
            'A unique value per operation, sent again unchanged on every retry of it. An sf-string ("...") as the draft defines it, or a bare token of printable ASCII without spaces or commas. Scoped to the caller: two callers may use the same key.',
          schema: { type: 'string', minLength: 1, maxLength: DEFAULT_MAX_KEY_LENGTH * 2 + 2, pattern: KEY_PATTERN },
          example: '"8e03978e-40d5-43e8-bc93-6894a57f9324"',
        },
      },
      headers: {
        IdempotentReplayed: {
          description: `\`${REPLAYED_HEADER}: true\` on a response replayed from the first request's record; absent on the first answer. The server may send aliases (replayedHeaderAliases).`,
          schema: { type: 'string', const: 'true' },
        },
        RetryAfter: {
          description:
            'Seconds to wait before retrying with the same Idempotency-Key (RFC 9110 section 10.2.3): the remaining lease of the request in progress, or the store back-off.',
          schema: { type: 'integer', minimum: 1 },
        },
      },
      schemas,
      responses,
    },
  };
}
