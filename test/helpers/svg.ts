import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { writeSvg } from '../../scripts/pictures/render-svg.js';

/**
 * Checks a generated picture as a browser and GitHub would take it: well-formed XML whose root is <svg>, and
 * returns the text it shows (every <text>, entities decoded), so a test can look for its series and span names.
 */
export function svgTexts(svg: string): string[] {
  const valid = XMLValidator.validate(svg);
  if (valid !== true) throw new Error(`not well-formed XML: ${valid.err.msg} at line ${valid.err.line}`);
  const document = new XMLParser({ ignoreAttributes: true, processEntities: true, isArray: () => true }).parse(svg) as Record<string, unknown>;
  if (!('svg' in document)) throw new Error(`root element is not <svg> but <${Object.keys(document)[0]}>`);
  const texts: string[] = [];
  const walk = (node: unknown, inText: boolean) => {
    if (typeof node === 'string' || typeof node === 'number') {
      if (inText) texts.push(String(node));
    } else if (Array.isArray(node)) {
      for (const child of node) walk(child, inText);
    } else if (node && typeof node === 'object') {
      for (const [name, child] of Object.entries(node)) walk(child, inText || name === 'text' || name === 'tspan');
    }
  };
  walk(document, false);
  return texts;
}

/**
 * `UPDATE_PICTURES=1` (npm run pictures) writes the picture a test drew from a real server into docs/images/, the
 * committed copy; otherwise the test only checks it, so an ordinary run leaves the work tree clean.
 */
export function maybeUpdatePicture(file: URL, svg: string): void {
  if (process.env.UPDATE_PICTURES === '1') writeSvg(file, svg);
}
