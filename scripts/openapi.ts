import { writeFileSync } from 'node:fs';
import { openApiDocument, OPENAPI_DOCUMENT_PATH } from '../src/middleware/openapi.js';

/** `npm run openapi`: writes the OpenAPI components the package ships, from the problem catalogue. */
writeFileSync(new URL(`../${OPENAPI_DOCUMENT_PATH}`, import.meta.url), JSON.stringify(openApiDocument(), null, 2) + '\n');
console.log(`wrote ${OPENAPI_DOCUMENT_PATH}`);
