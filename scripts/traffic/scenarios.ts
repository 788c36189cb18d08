import { postPayment, postPaymentRetrying, type Answer, type PaymentRequest } from './client.js';

/**
 * The traffic a payments API really sees from retrying clients. Each scenario uses fresh keys, knows
 * what the idempotency layer should answer, and says whether it did.
 */
export const SCENARIOS = ['first-try', 'replay', 'timeout-then-retry', 'concurrent-duplicates', 'payload-mismatch', 'two-tenants-same-key'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export const TENANTS = ['acct_alice', 'acct_bob', 'acct_carol'] as const;
const CONCURRENT_DUPLICATES = 3;

export interface Exchange {
  /** What this request is within its scenario: 'first', 'retry', 'duplicate', ... */
  role: string;
  account: string;
  key: string;
  answer: Answer;
}

export interface ScenarioRun {
  scenario: Scenario;
  exchanges: Exchange[];
  /** Empty when the server answered as an idempotent API must; else what was wrong. */
  problems: string[];
}

export interface ScenarioContext {
  baseUrl: string;
  /** Unique per scenario run, so keys never collide across runs or with other clients. */
  keyPrefix: string;
  tenant: string;
  otherTenant: string;
  /** How long the client waits before it gives up in 'timeout-then-retry'. */
  clientTimeoutMs: number;
  random: () => number;
}

export async function runScenario(scenario: Scenario, context: ScenarioContext): Promise<ScenarioRun> {
  const exchanges: Exchange[] = [];
  const send = async (role: string, payment: PaymentRequest, timeoutMs?: number): Promise<Answer> => {
    const answer = await postPayment(context.baseUrl, payment, timeoutMs);
    exchanges.push({ role, account: payment.account, key: payment.key, answer });
    return answer;
  };
  // Every attempt of the retrying client is an exchange of its own, as the server saw it.
  const retry = (role: string, payment: PaymentRequest): Promise<Answer> =>
    postPaymentRetrying(context.baseUrl, payment, (answer) => exchanges.push({ role, account: payment.account, key: payment.key, answer }));
  const payment = newPayment(context.tenant, `${context.keyPrefix}-${scenario}`, context.random);
  const problems = await SCENARIO_STEPS[scenario](payment, send, context, retry);
  return { scenario, exchanges, problems };
}

type Send = (role: string, payment: PaymentRequest, timeoutMs?: number) => Promise<Answer>;
/** Sends with a retrying client (idempotentFetch) until a final answer; returns the last one. */
type Retry = (role: string, payment: PaymentRequest) => Promise<Answer>;
type Steps = (payment: PaymentRequest, send: Send, context: ScenarioContext, retry: Retry) => Promise<string[]>;

const SCENARIO_STEPS: Record<Scenario, Steps> = {
  'first-try': async (payment, send) => check([['first', await send('first', payment), 'executed']]),

  replay: async (payment, send) => {
    const first = await send('first', payment);
    const again = await send('replay', payment);
    return check([
      ['first', first, 'executed'],
      ['replay', again, 'replayed'],
    ]);
  },

  /**
   * The client gives up, then retries the same key as a real service client does (idempotentFetch: backoff
   * with jitter, Retry-After honoured, a 409 request-in-progress waited out) until it gets a final answer.
   */
  'timeout-then-retry': async (payment, send, context, retry) => {
    const first = await send('first (client timeout)', payment, context.clientTimeoutMs);
    const answer = isFinal(first) ? first : await retry('retry', payment);
    // The first attempt may have executed (the retry is a replay) or not (the retry executes): both are right.
    return check([['final answer', answer, 'executed or replayed']]);
  },

  /** Several copies of one request at once (a double click, a retrying proxy): one execution only. */
  'concurrent-duplicates': async (payment, send) => {
    const answers = await Promise.all(Array.from({ length: CONCURRENT_DUPLICATES }, () => send('duplicate', payment)));
    const executed = answers.filter((answer) => is(answer, 201, false)).length;
    const others = answers.filter((answer) => !is(answer, 201, false));
    const problems = executed === 1 ? [] : [`${executed} of ${CONCURRENT_DUPLICATES} concurrent duplicates executed (expected exactly 1)`];
    for (const answer of others) {
      if (!is(answer, 201, true) && !is(answer, 409, false)) problems.push(`a duplicate got ${describeAnswer(answer)} (expected a replay or 409)`);
    }
    return problems;
  },

  /** The same key reused for a different amount: a client bug the server must refuse (422). */
  'payload-mismatch': async (payment, send) => {
    const first = await send('first', payment);
    const changed = await send('changed payload', { ...payment, amount: payment.amount + 1 });
    return check([
      ['first', first, 'executed'],
      ['changed payload', changed, 'mismatch'],
    ]);
  },

  /** Keys are scoped per tenant: the same key from another account is a different operation. */
  'two-tenants-same-key': async (payment, send, context) => {
    const [mine, theirs] = await Promise.all([send('tenant A', payment), send('tenant B', { ...payment, account: context.otherTenant })]);
    return check([
      ['tenant A', mine, 'executed'],
      ['tenant B', theirs, 'executed'],
    ]);
  },
};

type Expectation = 'executed' | 'replayed' | 'executed or replayed' | 'mismatch';

function check(checks: ReadonlyArray<readonly [string, Answer, Expectation]>): string[] {
  const problems: string[] = [];
  for (const [role, answer, expected] of checks) {
    const ok =
      (expected === 'executed' && is(answer, 201, false)) ||
      (expected === 'replayed' && is(answer, 201, true)) ||
      (expected === 'executed or replayed' && answer.kind === 'response' && answer.status === 201) ||
      (expected === 'mismatch' && is(answer, 422, false));
    if (!ok) problems.push(`${role}: got ${describeAnswer(answer)}, expected ${expected}`);
  }
  return problems;
}

function is(answer: Answer, status: number, replayed: boolean): boolean {
  return answer.kind === 'response' && answer.status === status && answer.replayed === replayed;
}

/** A 409 (still in progress) or 503 (retry later) asks for a retry; so does an answer that never came. */
function isFinal(answer: Answer): boolean {
  return answer.kind === 'response' && answer.status !== 409 && answer.status < 500;
}

export function describeAnswer(answer: Answer): string {
  if (answer.kind === 'timeout') return 'client timeout';
  if (answer.kind === 'network-error') return `network error (${answer.message})`;
  return answer.replayed ? `${answer.status} replayed` : String(answer.status);
}

function newPayment(account: string, key: string, random: () => number): PaymentRequest {
  return { account, key, amount: 100 + Math.floor(random() * 9_900), currency: random() < 0.5 ? 'EUR' : 'USD' };
}
