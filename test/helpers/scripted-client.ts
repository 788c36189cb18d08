import { afterAll, beforeAll } from 'vitest';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { resendCountAttributes } from '../../src/entries/client.js';
import { registerTracerProvider, simpleSpanProcessor } from './otel-sdk.js';
import { startScriptedServer, type ScriptedServer } from './scripted-server.js';

/**
 * What the idempotentFetch tests (test/client-*.test.ts) share: a real HTTP server that answers from a script,
 * and a real OpenTelemetry SDK around the client. Real sockets and real timers throughout.
 */

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Retries without real waits, where the waits are not what a test is about. */
export const QUICK = { baseDelayMs: 1, maxDelayMs: 5 };

export function post(body: unknown = { amount: 100 }): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

/**
 * Registers the SDK and starts the scripted server (for the file that calls it, at its top level); `scripted`
 * is set once its beforeAll has run.
 */
export function scriptedClientEnvironment() {
  // A real SDK with the fetch (undici) instrumentation, configured as the README says: the instrumentation makes
  // each attempt's client span and asks resendCountAttributes for its resend count. Default propagators
  // (tracecontext, baggage). Each test file is its own process, so the global registration is the file's.
  const exporter = new InMemorySpanExporter();
  registerTracerProvider({ spanProcessors: [simpleSpanProcessor(exporter)] });
  registerInstrumentations({ instrumentations: [new UndiciInstrumentation({ startSpanHook: resendCountAttributes })] });

  let scripted: ScriptedServer;
  beforeAll(async () => {
    scripted = await startScriptedServer();
  });
  afterAll(async () => {
    await scripted?.close();
  });

  const keysSent = () => scripted.requests.map((request) => request.headers['idempotency-key']);

  return {
    exporter,
    get scripted() {
      return scripted;
    },
    keysSent,
  };
}
