import { postPayment, type Answer, type PaymentRequest } from './client.js';

/**
 * The traffic a payments API really sees from retrying clients. Each scenario uses fresh keys, knows
 * what the idempotency layer should answer, and says whether it did.
 */
export const SCENARIOS = ['first-try', 'replay', 'timeout-then-retry', 'concurrent-duplicates', 'payload-mismatch', 'two-tenants-same-key'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export const TENANTS = ['acct_alice', 'acct_bob', 'acct_carol'] as const;
const CONCURRENT_DUPLICATES = 3;
/** Retries after a client timeout: enough to outlast a 409 while the first attempt still runs. */
const MAX_RETRIES = 5;
const RETRY_BACKOFF_MS = 200;

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
  const payment = newPayment(context.tenant, `${context.keyPrefix}-${scenario}`, context.random);
  const problems = await SCENARIO_STEPS[scenario](payment, send, context);
  return { scenario, exchanges, problems };
}

type Send = (role: string, payment: PaymentRequest, timeoutMs?: number) => Promise<Answer>;
type Steps = (payment: PaymentRequest, send: Send, context: ScenarioContext) => Promise<string[]>;

const SCENARIO_STEPS: Record<Scenario, Steps> = {
  'first-try': async (payment, send) => check([['first', await send('first', payment), 'executed']]),

  'replay': async (payment, send) => {
    const first = await send('first', payment);
    const again = await send('replay', payment);
    return check([
      ['first', first, 'executed'],
      ['replay', again, 'replayed'],
    ]);
  },

  /** The client gives up, then retries the same key until it gets a final answer. */
  'timeout-then-retry': async (payment, send, context) => {
    let answer = await send('first (client timeout)', payment, context.clientTimeoutMs);
    for (let retry = 1; retry <= MAX_RETRIES && !isFinal(answer); retry++) {
      await sleep(answer.kind === 'response' ? (answer.retryAfterMs ?? RETRY_BACKOFF_MS) : RETRY_BACKOFF_MS);
      answer = await send('retry', payment);
    }
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
