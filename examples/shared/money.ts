/**
 * The money part of the example bodies: a JSON object with a positive integer `amount` in minor units
 * (fits Postgres `integer`). The `currency` member is returned as sent; each service checks it its own way.
 */
export function readMoney(body: unknown): { amount: number; currency: unknown } | { problem: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { problem: 'The body must be a JSON object.' };
  const { amount, currency } = body as Record<string, unknown>;
  if (!Number.isSafeInteger(amount) || (amount as number) <= 0 || (amount as number) > 2_147_483_647) {
    return { problem: '`amount` must be a positive integer (minor units).' };
  }
  return { amount: amount as number, currency };
}
