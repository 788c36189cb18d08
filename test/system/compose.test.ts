import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

/**
 * There is no Docker engine here, so the compose stack is checked statically: the files parse, every
 * mounted or copied file exists, every image is pinned, and the names and ports that the services,
 * Prometheus and the Grafana datasources use to find each other agree.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const COMPOSE_DIR = join(ROOT, 'examples/compose');
const DASHBOARDS_DIR = join(ROOT, 'dashboards');

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
}

const readYaml = (path: string) => parse(readFileSync(path, 'utf8'));
const compose = readYaml(join(COMPOSE_DIR, 'docker-compose.yml')) as { services: Record<string, ComposeService> };
const services = compose.services;
const prometheus = readYaml(join(COMPOSE_DIR, 'prometheus.yml')) as {
  global: { scrape_interval: string };
  scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }>;
};
const datasourcesPath = join(DASHBOARDS_DIR, 'provisioning/datasources.yaml');
const dashboardsProvisioningPath = join(DASHBOARDS_DIR, 'provisioning/dashboards.yaml');

/** Bind mounts as [host path (absolute), container path]. */
function bindMounts(service: ComposeService): Array<[string, string]> {
  return (service.volumes ?? [])
    .map((volume) => volume.split(':'))
    .filter(([source]) => source!.startsWith('.') || source!.startsWith('/'))
    .map(([source, target]) => [resolve(COMPOSE_DIR, source!), target!]);
}

/** `http://host:port/...` -> { host, port }. */
function hostAndPort(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: Number(parsed.port) };
}

function env(service: string, name: string): string {
  const value = services[service]?.environment?.[name];
  if (value === undefined) throw new Error(`${service} has no ${name}`);
  return value;
}

describe('examples/compose/docker-compose.yml', () => {
  it('has the whole stack: Postgres, Jaeger, Prometheus, Grafana and the two example services', () => {
    expect(Object.keys(services).sort()).toEqual(['grafana', 'jaeger', 'ledger', 'payments', 'postgres', 'prometheus']);
  });

  it('pins every image tag (a locally built image is built, never pulled)', () => {
    for (const [name, service] of Object.entries(services)) {
      const image = service.image ?? '';
      if (service.build) {
        expect(image, name).toMatch(/^[a-z0-9./-]+:[\w.-]+$/);
        expect(image.endsWith(':latest'), name).toBe(false);
      } else {
        // A full release: major.minor.patch, or major.minor where that is the whole version (Postgres).
        expect(image, name).toMatch(/^[a-z0-9./-]+:v?\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$/);
      }
    }
    const dockerfile = readFileSync(join(COMPOSE_DIR, 'Dockerfile'), 'utf8');
    for (const [, image] of dockerfile.matchAll(/^FROM\s+(\S+)/gm)) expect(image).toMatch(/^node:\d+\.\d+\.\d+-[a-z]+(-slim)?$/);
  });

  it('pins the Jaeger release that the Jaeger end-to-end test builds and runs (scripts/install-jaeger.sh)', () => {
    const script = readFileSync(join(ROOT, 'scripts/install-jaeger.sh'), 'utf8');
    const release = /^RELEASE_VERSION='v(\d+\.\d+\.\d+)'$/m.exec(script)?.[1];
    expect(release).toBe('2.13.0');
    expect(services.jaeger!.image).toBe(`jaegertracing/jaeger:${release}`);
  });

  it('pins the Prometheus release that the dashboard tests build and run (scripts/install-prometheus.sh)', () => {
    const script = readFileSync(join(ROOT, 'scripts/install-prometheus.sh'), 'utf8');
    const release = /^RELEASE_VERSION='(\d+\.\d+\.\d+)'$/m.exec(script)?.[1];
    expect(release).toBe('3.16.0');
    expect(services.prometheus!.image).toBe(`prom/prometheus:v${release}`);
  });

  it('mounts only files that exist in the repository', () => {
    const mounts = Object.values(services).flatMap(bindMounts);
    expect(mounts.length).toBeGreaterThan(0);
    for (const [source] of mounts) expect(existsSync(source) && statSync(source).isFile(), source).toBe(true);
  });

  it('builds the example image from files that exist, and runs example entry points that exist', () => {
    for (const [name, service] of Object.entries(services)) {
      if (service.build) {
        const context = resolve(COMPOSE_DIR, service.build.context);
        expect(existsSync(join(context, service.build.dockerfile)), name).toBe(true);
        for (const file of ['package.json', 'package-lock.json']) expect(existsSync(join(context, file)), file).toBe(true);
        const scripts = (service.command ?? []).filter((argument) => argument.endsWith('.ts'));
        expect(scripts, name).toHaveLength(1);
        expect(existsSync(join(context, scripts[0]!)), scripts[0]).toBe(true);
      }
    }
  });

  it('publishes ports on 127.0.0.1 only, each host port once', () => {
    const published = Object.values(services).flatMap((service) => service.ports ?? []);
    for (const mapping of published) expect(mapping).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
    const hostPorts = published.map((mapping) => mapping.split(':')[1]);
    expect(new Set(hostPorts).size).toBe(hostPorts.length);
  });

  it('publishes the payments API on the port demo:traffic uses by default', async () => {
    const { DEFAULT_URL } = await import('../../scripts/traffic.js');
    const port = hostAndPort(DEFAULT_URL).port;
    expect(services.payments!.ports).toContain(`127.0.0.1:${port}:${env('payments', 'PORT')}`);
  });

  it('points both services at the postgres service, with its user, password and database', () => {
    for (const name of ['payments', 'ledger']) {
      const url = new URL(env(name, 'DATABASE_URL'));
      expect(url.hostname).toBe('postgres');
      expect(url.port).toBe('5432');
      expect(url.username).toBe(env('postgres', 'POSTGRES_USER'));
      expect(url.password).toBe(env('postgres', 'POSTGRES_PASSWORD'));
      expect(url.pathname).toBe(`/${env('postgres', 'POSTGRES_DB')}`);
    }
  });

  it('sends traces from both services to the jaeger service over OTLP/HTTP', () => {
    for (const name of ['payments', 'ledger']) {
      const endpoint = services[name]!.environment!.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? services[name]!.environment!.OTEL_EXPORTER_OTLP_ENDPOINT;
      expect(endpoint, name).toBeDefined();
      expect(hostAndPort(endpoint!)).toEqual({ host: 'jaeger', port: 4318 });
    }
  });

  it('has payments call the ledger service on the port the ledger listens on', () => {
    expect(hostAndPort(env('payments', 'DOWNSTREAM_URL'))).toEqual({ host: 'ledger', port: Number(env('ledger', 'PORT')) });
  });
});

describe('examples/compose/prometheus.yml', () => {
  const targets = prometheus.scrape_configs.flatMap((job) =>
    job.static_configs.flatMap((config) => config.targets.map((target) => ({ job: job.job_name, ...hostAndPort(`http://${target}`) }))),
  );

  it('scrapes each example service on its own metrics port, as the service is configured', () => {
    const exporters = ['payments', 'ledger'];
    expect(targets.map((target) => target.host).sort()).toEqual([...exporters].sort());
    for (const target of targets) expect(target.port).toBe(Number(env(target.host, 'OTEL_EXPORTER_PROMETHEUS_PORT')));
    expect(new Set(targets.map((target) => target.port)).size).toBe(targets.length);
  });

  it('names each job after the service, the "service" label of the dashboards', () => {
    for (const target of targets) expect(target.job).toBe(target.host);
  });
});

describe('Grafana provisioning in the compose stack', () => {
  const grafanaMounts = new Map(bindMounts(services.grafana!).map(([source, target]) => [source, target]));

  it('mounts the bundled datasources and dashboards provisioning files where Grafana reads them', () => {
    expect(grafanaMounts.get(datasourcesPath)).toMatch(/^\/etc\/grafana\/provisioning\/datasources\/[\w.-]+\.ya?ml$/);
    expect(grafanaMounts.get(dashboardsProvisioningPath)).toMatch(/^\/etc\/grafana\/provisioning\/dashboards\/[\w.-]+\.ya?ml$/);
  });

  it('mounts every bundled dashboard in the folder the dashboards provider reads', () => {
    const provider = (readYaml(dashboardsProvisioningPath) as { providers: Array<{ options: { path: string } }> }).providers[0]!;
    const dashboards = readdirSync(DASHBOARDS_DIR).filter((file) => file.endsWith('.json'));
    expect(dashboards.length).toBeGreaterThan(0);
    for (const file of dashboards) expect(grafanaMounts.get(join(DASHBOARDS_DIR, file)), file).toBe(`${provider.options.path}/${file}`);
  });

  it('has datasources that reach the prometheus and jaeger services on their ports', () => {
    const { datasources } = readYaml(datasourcesPath) as { datasources: Array<{ uid: string; type: string; url: string; jsonData?: { timeInterval?: string } }> };
    const byUid = new Map(datasources.map((datasource) => [datasource.uid, datasource]));
    expect(byUid.get('prometheus')?.type).toBe('prometheus');
    expect(byUid.get('jaeger')?.type).toBe('jaeger');
    expect(hostAndPort(byUid.get('prometheus')!.url)).toEqual({ host: 'prometheus', port: 9090 });
    expect(hostAndPort(byUid.get('jaeger')!.url)).toEqual({ host: 'jaeger', port: 16686 });
    // Both listen on their default ports: nothing in the stack moves them.
    expect((services.prometheus!.command ?? []).some((flag) => flag.startsWith('--web.listen-address'))).toBe(false);
    // $__rate_interval is derived from the datasource's interval: it must be Prometheus' scrape interval.
    expect(byUid.get('prometheus')!.jsonData?.timeInterval).toBe(prometheus.global.scrape_interval);
  });
});
