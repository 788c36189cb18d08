import { describe, expect, it } from 'vitest';
import { SDK_MAJOR } from '../helpers/otel-sdk.js';
import { SDK3_ENV } from '../sdk3/aliases.js';

/** The SDK 3 leg must really run on SDK 3: a broken alias would silently rerun every suite on SDK 2. */
describe('the OpenTelemetry SDK the tests run on', () => {
  const sdk3Leg = process.env[SDK3_ENV] === '3';

  it(`is SDK ${sdk3Leg ? 3 : 2}, as the leg (${SDK3_ENV}) names it`, () => {
    expect(SDK_MAJOR).toBe(sdk3Leg ? 3 : 2);
  });
});
