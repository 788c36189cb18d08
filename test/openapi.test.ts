import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import SwaggerParser from '@apidevtools/swagger-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openApiDocument, OPENAPI_DOCUMENT_PATH } from '../src/middleware/openapi.js';
import { readKey } from '../src/key.js';
import { DEFAULT_MAX_KEY_LENGTH, PROBLEMS, type ProblemName } from '../src/index.js';
import { createTestApp } from './helpers/app.js';
import { POSTGRES_SERVER, type TestDatabase } from './helpers/databases.js';
import { serve } from './helpers/http.js';

/**
 * The OpenAPI 3.1 components the package ships: the file is what the catalogue generates, a real OpenAPI parser
 * validates it and an API document that $refs it (as the README shows), and the middleware's real answers match
 * the schemas it states.
 */
const SHIPPED = fileURLToPath(new URL(`../${OPENAPI_DOCUMENT_PATH}`, import.meta.url));
type Document = ReturnType<typeof openApiDocument>;

describe('openapi/components.json', () => {
  it('is what the problem catalogue generates (npm run openapi)', () => {
    expect(readFileSync(SHIPPED, 'utf8')).toBe(JSON.stringify(openApiDocument(), null, 2) + '\n');
  });

  it('is a valid OpenAPI 3.1 document for @apidevtools/swagger-parser', async () => {
    const validated = (await SwaggerParser.validate(SHIPPED)) as unknown as Document;
    expect(validated.openapi).toBe('3.1.0');
  });

  it('has a response with schema and example, and a schema, for every problem type; Retry-After where the middleware sends it', () => {
    const { components } = openApiDocument();
    for (const name of Object.keys(PROBLEMS) as ProblemName[]) {
      const component = name[0]!.toUpperCase() + name.slice(1);
      const response = components.responses[component] as { content: Record<string, { example: { status: number; retryable: boolean } }>; headers?: object };
      expect(response.content['application/problem+json']!.example).toMatchObject({ status: PROBLEMS[name].status, retryable: PROBLEMS[name].retryable });
      expect(components.schemas[`${component}Problem`]).toBeDefined();
      expect(response.headers !== undefined).toBe(name === 'inProgress' || name === 'storeUnavailable');
    }
  });

  it('lets an API document $ref its parameter, header and responses from the installed file, as the README shows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'openapi-'));
    try {
      const api = {
        openapi: '3.1.0',
        info: { title: 'Payments', version: '1' },
        paths: {
          '/payments': {
            post: {
              parameters: [{ $ref: `${SHIPPED}#/components/parameters/IdempotencyKey` }],
              responses: {
                '201': { description: 'Created', headers: { 'Idempotent-Replayed': { $ref: `${SHIPPED}#/components/headers/IdempotentReplayed` } } },
                '409': { $ref: `${SHIPPED}#/components/responses/InProgress` },
                '422': { $ref: `${SHIPPED}#/components/responses/KeyReused` },
              },
            },
          },
        },
      };
      const file = join(dir, 'api.json');
      writeFileSync(file, JSON.stringify(api));
      const validated = (await SwaggerParser.validate(file)) as unknown as { paths: Record<string, { post: { parameters: Array<{ name: string }> } }> };
      expect(validated.paths['/payments']!.post.parameters[0]!.name).toBe('Idempotency-Key');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("states the key's syntax as the middleware reads it", () => {
    const { schema } = openApiDocument().components.parameters.IdempotencyKey;
    const pattern = new RegExp(schema.pattern);
    const rules = { minKeyLength: 1, maxKeyLength: DEFAULT_MAX_KEY_LENGTH };
    for (const value of ['abc', '"quoted key"', '"esc\\"aped"', 'a,b', '"open', 'x"y', 'has space', 'caf\u00e9', '"bad\\x"']) {
      expect(pattern.test(value), value).toBe(readKey(value, rules).kind === 'valid');
    }
  });
});

describe('the middleware answers as the components say', () => {
  const target = POSTGRES_SERVER;
  let db: TestDatabase;
  let server: Awaited<ReturnType<typeof serve>> | undefined;
  let url = '';

  beforeAll(async () => {
    db = await target.open('openapi');
    const { app } = createTestApp({ store: await db.store(), options: { required: true } });
    server = await serve(app);
    url = server.url;
  });
  afterAll(async () => {
    await server?.close();
    await db?.close();
  });

  it('sends 400 key-missing, 400 key-invalid and 422 key-reused bodies that match their schemas', async () => {
    const ajv = new Ajv2020({ strict: false });
    // The schemas refer to each other inside the document: register it whole and validate by pointer.
    ajv.addSchema({ $id: 'components', components: openApiDocument().components });
    ajv.addFormat('uri', true);
    const post = (headers: Record<string, string>, body: object) =>
      fetch(`${url}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-account': 'acct_openapi', ...headers },
        body: JSON.stringify(body),
      }).then(async (response) => ({ status: response.status, body: await response.json() }));
    const key = `openapi-${Date.now()}`;
    await post({ 'idempotency-key': key }, { amount: 1 });
    const reused = await post({ 'idempotency-key': key }, { amount: 2 });
    expect(reused.body).toMatchObject({ differences: { parts: ['body'], members: ['/amount'] } });
    const answers: Array<[string, { status: number; body: unknown }]> = [
      ['KeyMissingProblem', await post({}, { amount: 1 })],
      ['KeyInvalidProblem', await post({ 'idempotency-key': 'a,b' }, { amount: 1 })],
      ['KeyReusedProblem', await post({ 'idempotency-key': key }, { amount: 2 })],
    ];
    for (const [schema, answer] of answers) {
      const validate = ajv.getSchema(`components#/components/schemas/${schema}`)!;
      expect(validate(answer.body), `${schema}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    // And a schema refuses what it must: a key-reused body is no key-missing one.
    expect(ajv.getSchema('components#/components/schemas/KeyMissingProblem')!(answers[2]![1].body)).toBe(false);
  });
});
