// The structure check of `npm run lint` (dependency-cruiser): the layers of src/ point one way.
//   kernel (src/*.ts: protocol, errors, error-code, validation, hooks, key, problem-instance, stored-fingerprint)
//   ← telemetry ← store ← middleware ← entries and src/index.ts;
//   client imports only the kernel; cli and conformance import the store, telemetry and the kernel.
// Type-only imports count (tsPreCompilationDeps): a layer that names another's types depends on it.
const KERNEL = '^src/(?!index\\.ts$)[^/]+\\.ts$';
const FOLDER = (...names) => `^src/(${names.join('|')})/`;
const TOP = ['^src/index\\.ts$', FOLDER('entries')];

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular-between-folders',
      comment: 'A module cycle that crosses folders ties two layers together: neither can be read or changed alone.',
      severity: 'error',
      from: { path: '^src/([^/]+)/' },
      to: { circular: true, pathNot: '^src/$1/' },
    },
    {
      name: 'kernel-imports-only-kernel',
      comment: 'The kernel (src/*.ts) is the bottom layer: it imports only itself, node and @opentelemetry/api.',
      severity: 'error',
      from: { path: KERNEL },
      to: { pathNot: [KERNEL, '^node_modules/@opentelemetry/api/'], dependencyTypesNot: ['core'] },
    },
    {
      name: 'telemetry-below-store-and-middleware',
      comment: 'Telemetry (names, metrics, correlation, span processor, sampler) knows no store and no request lifecycle.',
      severity: 'error',
      from: { path: FOLDER('telemetry') },
      to: { path: [FOLDER('store', 'middleware', 'client', 'cli', 'conformance', 'entries'), ...TOP] },
    },
    {
      name: 'store-imports-kernel-and-telemetry-names-and-metrics',
      comment: 'The store imports the kernel and only the names and instruments of telemetry.',
      severity: 'error',
      from: { path: FOLDER('store') },
      to: {
        path: [FOLDER('middleware', 'client', 'cli', 'conformance', 'entries', 'telemetry'), ...TOP],
        pathNot: '^src/telemetry/(names|metrics)\\.ts$',
      },
    },
    {
      name: 'middleware-below-entries',
      comment: 'The middleware is imported by the entries, never the other way, and never by a sibling audience.',
      severity: 'error',
      from: { path: FOLDER('middleware') },
      to: { path: [FOLDER('client', 'cli', 'conformance', 'entries'), ...TOP] },
    },
    {
      name: 'client-imports-only-kernel',
      comment: 'idempotentFetch runs in services with neither Koa nor pg: the client shares only the kernel.',
      severity: 'error',
      from: { path: FOLDER('client') },
      to: { path: [FOLDER('store', 'middleware', 'telemetry', 'cli', 'conformance', 'entries'), ...TOP] },
    },
    {
      name: 'cli-and-conformance-import-store-and-kernel',
      comment: 'The operator CLI and the store test kit work on the store; they never run the middleware.',
      severity: 'error',
      from: { path: FOLDER('cli', 'conformance') },
      to: { path: [FOLDER('middleware', 'client', 'entries'), ...TOP] },
    },
  ],
  options: {
    includeOnly: '^(src|node_modules)/',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
    doNotFollow: { path: 'node_modules' },
  },
};
