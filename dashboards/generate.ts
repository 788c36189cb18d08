import { writeFileSync } from 'node:fs';
import { BUNDLED_DASHBOARDS, serialize } from './src/dashboards.js';

/**
 * `npm run dashboards`: writes the bundled Grafana dashboards as JSON next to this file. The JSON is
 * committed (users import it as is); a test fails when it differs from what this generator produces.
 */
for (const { file, build } of BUNDLED_DASHBOARDS) {
  const url = new URL(file, import.meta.url);
  writeFileSync(url, serialize(build()));
  console.log(`wrote dashboards/${file}`);
}
