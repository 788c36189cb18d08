import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../examples/shared/free-port.js';
import { terminate, until } from '../helpers/child-processes.js';
import { firstRunnable, prepareTool } from '../helpers/system-tools.js';

/**
 * A real Jaeger v2 for the Jaeger end-to-end test: the binary scripts/install-jaeger.sh builds, started with a
 * temporary config (in-memory storage, OTLP/HTTP receiver, query API), every listener on a free loopback port.
 */

/** The versions scripts/install-jaeger.sh builds: one place, which examples/compose's pin is checked against. */
const INSTALLER = readFileSync(new URL('../../scripts/install-jaeger.sh', import.meta.url), 'utf8');
const MODULE_VERSION = /^MODULE_VERSION='(v[\d.]+)'$/m.exec(INSTALLER)![1]!;
/** The release, without the v (`2.13.0`), as the image tag spells it. */
export const JAEGER_RELEASE = /^RELEASE_VERSION='v([\d.]+)'$/m.exec(INSTALLER)![1]!;

/**
 * Where scripts/install-jaeger.sh caches the binary, or JAEGER_BINARY. Importing this module builds it when it is
 * missing (minutes, once per machine); undefined, with JAEGER_MISSING_REASON, only where Go is not installed.
 */
const JAEGER = await prepareTool({
  name: 'jaeger',
  script: 'install-jaeger.sh',
  find: findBinary,
  cannotInstall: () =>
    firstRunnable(['go', '/usr/local/go/bin/go'], ['version']) ? undefined : 'no Go toolchain to build the Jaeger binary from source (or set JAEGER_BINARY)',
});
export const JAEGER_BINARY = JAEGER.binary;
export const JAEGER_MISSING_REASON = JAEGER.skipReason ?? '';

function findBinary(): string | undefined {
  const cacheHome = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const candidate = process.env.JAEGER_BINARY || join(cacheHome, 'koa-idempotency', `jaeger-${MODULE_VERSION}`, 'jaeger');
  try {
    accessSync(candidate, constants.X_OK);
    return candidate;
  } catch {
    return undefined;
  }
}

/** The version the binary reports (`jaeger version`: stamped at build time by the installer), or '' if none. */
export function jaegerBinaryVersion(binary: string): string {
  const output = spawnSync(binary, ['version'], { encoding: 'utf8', timeout: 30_000 }).stdout ?? '';
  const line = output.trim().split('\n').pop() ?? '';
  try {
    return String((JSON.parse(line) as { gitVersion?: string }).gitVersion ?? '');
  } catch {
    return '';
  }
}

export interface JaegerServer {
  /** Base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the SDK appends /v1/traces). */
  otlpUrl: string;
  /** Base URL of the query service: /api/traces, /api/services, /api/v3/traces. */
  queryUrl: string;
  /** GET a JSON document from the query service; throws on a non-2xx answer. */
  get<T>(path: string, params?: Record<string, string>): Promise<T>;
  stop(): Promise<void>;
}

export async function startJaeger(): Promise<JaegerServer> {
  if (!JAEGER_BINARY) throw new Error(JAEGER_MISSING_REASON);
  const dir = mkdtempSync(join(tmpdir(), 'koa-idempotency-jaeger-'));
  const [otlpPort, queryHttpPort, queryGrpcPort] = [await freePort(), await freePort(), await freePort()];
  const config = join(dir, 'config.yaml');
  // The all-in-one configuration reduced to what the test needs: no gRPC/Jaeger/Zipkin receivers, no remote
  // sampling, no self-metrics endpoint (port 8888 would clash with a second run), no self-tracing, no health check.
  writeFileSync(
    config,
    `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
    # Jaeger's own traces would go to localhost:4317 and log an export error every few seconds.
    traces:
      level: none
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:${queryHttpPort}
    grpc:
      endpoint: 127.0.0.1:${queryGrpcPort}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${otlpPort}
processors:
  batch:
    # Stored within a moment of arrival, so the test's polling deadline stays short.
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`,
  );
  const child = spawn(JAEGER_BINARY, ['--config', config], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const queryUrl = `http://127.0.0.1:${queryHttpPort}`;
  const stop = async () => {
    await terminate(child, 5_000);
    rmSync(dir, { recursive: true, force: true });
  };

  async function get<T>(path: string, params: Record<string, string> = {}): Promise<T> {
    const query = new URLSearchParams(params).toString();
    const response = await fetch(`${queryUrl}${path}${query ? `?${query}` : ''}`);
    const text = await response.text();
    if (!response.ok) throw new Error(`Jaeger ${path}?${query}: ${response.status} ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }

  try {
    await until(
      async () => (await fetch(`${queryUrl}/api/services`).catch(() => undefined))?.ok === true,
      30_000,
      () => `Jaeger did not start: ${stderr}`,
    );
    // The OTLP receiver starts with the pipeline; an empty export proves it is listening.
    await until(
      async () =>
        (await fetch(`http://127.0.0.1:${otlpPort}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }).catch(() => undefined))
          ?.ok === true,
      30_000,
      () => `Jaeger's OTLP receiver did not start: ${stderr}`,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { otlpUrl: `http://127.0.0.1:${otlpPort}`, queryUrl, get, stop };
}
