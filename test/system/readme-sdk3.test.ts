import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../examples/shared/free-port.js';
import { ATTR, correlationIdFor, EVENT } from '../../src/entries/otel.js';
import { until } from '../helpers/child-processes.js';
import { uniqueSchema } from '../helpers/databases.js';
import { decodeTraceRequest, type OtlpSpan } from '../helpers/otlp-protobuf.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCOPE = 'readme-app';
const OTLP_SERVER_KIND = 2;

/** The README's OpenTelemetry section: its `npm install` line and its SDK set-up, as a user copies them. */
function readmeSetup(): { install: string; telemetry: string } {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = /^## OpenTelemetry\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? '';
  const install = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const telemetry = /```ts\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  return { install: install.replace(/\\\n\s*/g, ' ').trim(), telemetry };
}

/** The library as npm publishes it: built into a staging copy (the repository's dist/ is left alone) and packed. */
function packLibrary(workDir: string): string {
  const stage = join(workDir, 'stage');
  mkdirSync(stage);
  for (const entry of ['package.json', 'README.md', 'SECURITY.md', 'sql', 'dashboards']) cpSync(join(ROOT, entry), join(stage, entry), { recursive: true });
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(stage, 'dist')]);
  execFileSync('npm', ['pack', '--silent', '--pack-destination', workDir], { cwd: stage, encoding: 'utf8' });
  return join(
    workDir,
    readdirSync(workDir).find((name) => name.endsWith('.tgz'))!,
  );
}

/** One name from each entry point, so that all their declarations are compiled. */
const ENTRIES = `import { idempotency } from 'koa-idempotency';
import { PostgresStore, type PGliteLike } from 'koa-idempotency/postgres';
import { idempotencySampler } from 'koa-idempotency/otel';
import { idempotentFetch } from 'koa-idempotency/client';
import { storeConformance } from 'koa-idempotency/conformance';
export const used = [idempotency, PostgresStore, idempotencySampler, idempotentFetch, storeConformance];
export type Embedded = PGliteLike;
`;

/** A minimal app, as the README's "Enable the middleware" shows it, with a database query in the handler. */
const APP = `import Koa from 'koa';
import pg from 'pg';
import { bodyParser } from '@koa/bodyparser';
import { idempotency } from 'koa-idempotency';
import { PostgresStore } from 'koa-idempotency/postgres';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const store = new PostgresStore({ pool, schema: process.env.SCHEMA });
await store.migrate();
const app = new Koa();
app.use(bodyParser());
app.use(idempotency({ store, scope: () => '${SCOPE}' }));
app.use(async (ctx) => {
  const { rows } = await pool.query('SELECT 42 AS id');
  ctx.status = 201;
  ctx.body = rows[0];
});
const server = app.listen(0, '127.0.0.1', () => console.log('listening on http://127.0.0.1:' + server.address().port));
`;

/** The README's sampling set-up on SDK 3, typed against SDK 3's `Sampler` and the HTTP instrumentation's hook. */
const SAMPLER = `import { ParentBasedSampler, type Sampler } from '@opentelemetry/sdk-trace';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { idempotencySampler, keyHashAttributes } from 'koa-idempotency/otel';

export const sampler: Sampler = new ParentBasedSampler({ root: idempotencySampler({ ratio: 0.1 }) });
export const http = new HttpInstrumentation({ startIncomingSpanHook: (request) => keyHashAttributes(request) });
`;

/** An OTLP/HTTP receiver for traces: every span the app exports. */
async function otlpReceiver(): Promise<{ server: Server; url: string; spans: OtlpSpan[] }> {
  const spans: OtlpSpan[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      spans.push(...decodeTraceRequest(Buffer.concat(chunks)));
      response.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return { server, url: `http://127.0.0.1:${address.port}/v1/traces`, spans };
}

/**
 * The README's SDK 3 set-up copied into a fresh app, as a new user would: the packed library and the README's
 * `npm install` line, the set-up compiled by TypeScript (strict) against SDK 3's types, then run with Node and
 * exporting by OTLP (protobuf) to a receiver here. Spans must carry the correlation ID, the duplicate event and
 * the replay's link, exactly as the in-process telemetry suites check on the SDK the repository pins.
 */
describe("README's OpenTelemetry SDK 3 set-up in a fresh app, from the packed library", () => {
  const workDir = mkdtempSync(join(tmpdir(), 'koa-idempotency-readme-sdk3-'));
  const schema = uniqueSchema('readme_sdk3');
  let app: ChildProcess | undefined;
  let receiver: Awaited<ReturnType<typeof otlpReceiver>> | undefined;
  afterAll(async () => {
    if (app?.exitCode === null) {
      const exited = new Promise((resolve) => app!.once('exit', resolve));
      app.kill('SIGTERM');
      await exited;
    }
    receiver?.server.close();
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).finally(() => pool.end());
    rmSync(workDir, { recursive: true, force: true });
  });

  it('stamps the correlation ID on every span, and gives the replay the duplicate event and a link to the original', async () => {
    const tarball = packLibrary(workDir);
    const appDir = join(workDir, 'app');
    mkdirSync(appDir);
    writeFileSync(join(appDir, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }));
    const { install, telemetry } = readmeSetup();
    expect(install).toMatch(/^npm install koa-idempotency /);
    // The README's line with the packed library for the published name; the cache serves what the repository already installed.
    const quiet = { cwd: appDir, env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_prefer_offline: 'true' } };
    execFileSync('bash', ['-c', install.replace('npm install koa-idempotency ', `npm install ${tarball} `)], quiet);
    execFileSync('npm', ['install', 'koa@^3.3.0', 'pg@^8.23.1', '@koa/bodyparser@^6.1.0', '@types/koa', '@types/pg'], quiet);
    // Every entry point's declarations compile as a strict TypeScript user compiles them, libraries checked too
    // (skipLibCheck off) and without the optional peer PGlite: they imported its types and failed (TS2307).
    writeFileSync(join(appDir, 'entries.ts'), ENTRIES);
    writeFileSync(
      join(appDir, 'tsconfig.entries.json'),
      JSON.stringify({ compilerOptions: { module: 'nodenext', target: 'es2022', strict: true, skipLibCheck: false, noEmit: true }, files: ['entries.ts'] }),
    );
    execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.entries.json'], { cwd: appDir, encoding: 'utf8' });
    // Every entry point of package.json's exports loads from the tarball, each with its own names.
    const entries = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, unknown> }).exports)
      .filter((entry) => !entry.endsWith('.json'))
      .map((entry) => entry.replace(/^\./, 'koa-idempotency'));
    expect(entries).toEqual(['koa-idempotency', ...['postgres', 'otel', 'client', 'conformance'].map((entry) => `koa-idempotency/${entry}`)]);
    const loaded = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', `for (const entry of ${JSON.stringify(entries)}) console.log(entry, Object.keys(await import(entry)).length)`],
      quiet,
    );
    expect(
      String(loaded)
        .trim()
        .split('\n')
        .filter((line) => !/ [1-9]\d*$/.test(line)),
    ).toEqual([]);

    const metricsPort = await freePort();
    writeFileSync(join(appDir, 'telemetry.ts'), telemetry.replace('port: 9464', `port: ${metricsPort}`));
    writeFileSync(join(appDir, 'app.js'), APP);
    // The sampler against SDK 3's Sampler interface, as the README's sampling section wires it (compiled, not run).
    writeFileSync(join(appDir, 'sampler.ts'), SAMPLER);
    const tsconfig = {
      compilerOptions: { module: 'nodenext', target: 'es2022', strict: true, skipLibCheck: true, types: [], outDir: 'out' },
      files: ['telemetry.ts', 'sampler.ts'],
    };
    writeFileSync(join(appDir, 'tsconfig.json'), JSON.stringify(tsconfig));
    execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: appDir, encoding: 'utf8' });

    receiver = await otlpReceiver();
    const env = { ...process.env, SCHEMA: schema, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '100' };
    app = spawn(process.execPath, ['--import', './out/telemetry.js', 'app.js'], { cwd: appDir, env, stdio: ['ignore', 'pipe', 'inherit'] });
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: app!.stdout! }).on('line', (line) => {
        const match = /listening on (http:\/\/\S+)/.exec(line);
        if (match) resolve(match[1]!);
      });
      app!.once('exit', (code) => reject(new Error(`the app exited (${code}) before listening`)));
    });

    const key = `readme-${randomBytes(6).toString('hex')}`;
    const send = async () => {
      const traceId = randomBytes(16).toString('hex');
      const traceparent = `00-${traceId}-${randomBytes(8).toString('hex')}-01`;
      const headers = { traceparent, 'idempotency-key': key, 'content-type': 'application/json' };
      const response = await fetch(`${url}/payments`, { method: 'POST', headers, body: '{"amount":5}' });
      return { traceId, status: response.status, replayed: response.headers.get('idempotent-replayed'), body: await response.text() };
    };
    const original = await send();
    const replay = await send();
    expect([original.status, replay.status, replay.replayed, replay.body]).toEqual([201, 201, 'true', original.body]);

    const spansOf = (traceId: string) => receiver!.spans.filter((span) => span.traceId === traceId);
    const serverSpanOf = (traceId: string) => spansOf(traceId).find((span) => span.kind === OTLP_SERVER_KIND);
    await until(
      async () => Boolean(serverSpanOf(original.traceId) && serverSpanOf(replay.traceId)),
      20_000,
      () => `spans received: ${receiver!.spans.length}`,
    );

    const correlationId = correlationIdFor(SCOPE, key);
    const requestSpans = [...spansOf(original.traceId), ...spansOf(replay.traceId)];
    console.log(`fresh app on Node ${process.version}: ${requestSpans.length} spans in the two traces: ${requestSpans.map((span) => span.name).join(', ')}`);
    expect(spansOf(original.traceId).length).toBeGreaterThan(1); // the handler's query at least, beside the server span
    expect(requestSpans.filter((span) => span.attributes[ATTR.CORRELATION_ID] !== correlationId).map((span) => span.name)).toEqual([]);
    const replayServer = serverSpanOf(replay.traceId)!;
    expect(replayServer.events.find((event) => event.name === EVENT.DUPLICATE)?.attributes[ATTR.ORIGINAL_TRACE_ID]).toBe(original.traceId);
    expect(replayServer.links).toEqual([{ traceId: original.traceId, spanId: serverSpanOf(original.traceId)!.spanId }]);
  }, 300_000);
});
