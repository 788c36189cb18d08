import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * SDK 3's contrib instrumentations emit only the stable HTTP semantic conventions. The dashboards must
 * therefore name no attribute or label of the old ones (`http.method`, `http.status_code`, `http.target`...),
 * in either spelling (dotted as a Jaeger tag, underscored as a Prometheus label).
 */
const DASHBOARDS = fileURLToPath(new URL('../../dashboards/', import.meta.url));
const LEGACY_HTTP_NAMES = [
  'http.method',
  'http.status_code',
  'http.target',
  'http.url',
  'http.scheme',
  'http.host',
  'http.flavor',
  'http.user_agent',
  'net.host.name',
  'net.host.port',
  'net.peer.name',
];
const STABLE_HTTP_LABELS = ['http_route', 'http_request_method'];

describe('the dashboards and the stable HTTP semantic conventions', () => {
  const files = readdirSync(DASHBOARDS).filter((name) => name.endsWith('.json'));
  const text = files.map((name) => readFileSync(`${DASHBOARDS}${name}`, 'utf8')).join('\n');

  it('name no attribute or label of the old HTTP conventions', () => {
    expect(files.length).toBeGreaterThan(0);
    const spellings = LEGACY_HTTP_NAMES.flatMap((name) => [name, name.replaceAll('.', '_')]);
    expect(spellings.filter((name) => new RegExp(`\\b${name.replaceAll('.', '\\.')}\\b`).test(text))).toEqual([]);
  });

  it('use the stable names for the HTTP labels they read', () => {
    const httpLabels = new Set(text.match(/\bhttp_[a-z_]+\b/g) ?? []);
    expect([...httpLabels].filter((label) => !STABLE_HTTP_LABELS.includes(label))).toEqual([]);
    expect(httpLabels.has('http_route')).toBe(true);
  });
});
