import { writeFileSync } from 'node:fs';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/**
 * Vega-Lite to SVG without a browser: compiled to a Vega spec and drawn by vega's headless view (renderer 'none'
 * measures text by estimate, so no canvas package is needed). Every picture under docs/images/ goes through here,
 * with one look: white background, one font stack that GitHub and rsvg-convert both have.
 */
const CONFIG: TopLevelSpec['config'] = {
  background: 'white',
  font: 'DejaVu Sans, Helvetica, Arial, sans-serif',
  title: { fontSize: 14, anchor: 'start' },
  axis: { labelFontSize: 11, titleFontSize: 11 },
  legend: { labelFontSize: 11, titleFontSize: 11 },
};

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile({ ...spec, config: { ...CONFIG, ...spec.config } }).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes the picture with a trailing newline (prettier leaves SVG alone; git wants the newline). */
export function writeSvg(file: URL, svg: string): void {
  writeFileSync(file, `${svg}\n`);
}

/** docs/images/<name>, where the README and docs/ reference the pictures from. */
export const imageFile = (name: string): URL => new URL(`../../docs/images/${name}`, import.meta.url);
