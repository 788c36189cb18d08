import { formatTable } from '../../src/cli/format.js';
import { describeAnswer, SCENARIOS, type Scenario, type ScenarioRun } from './scenarios.js';

/** What the run did, as the outcome table shows it and `--json` prints it. */
export interface TrafficReport {
  url: string;
  durationMs: number;
  scenarios: number;
  requests: number;
  /** Requests by scenario and answer ('201', '201 replayed', '409', 'client timeout', ...). */
  outcomes: Array<{ scenario: Scenario; answer: string; requests: number }>;
  /** Answers carrying `Idempotent-Replayed: true`. */
  replays: number;
  /**
   * Distinct (account, key) pairs that got a 201, replayed or not: each one is exactly one payment row
   * on the server, even when the client timed out and only saw the replay.
   */
  keysWithPayment: number;
  asExpected: number;
  unexpected: Array<{ scenario: Scenario; problems: string[] }>;
}

export function buildReport(url: string, runs: readonly ScenarioRun[], durationMs: number): TrafficReport {
  const outcomes: TrafficReport['outcomes'] = [];
  const keysWithPayment = new Set<string>();
  let requests = 0;
  let replays = 0;
  for (const run of runs) {
    for (const { account, key, answer } of run.exchanges) {
      requests++;
      const described = describeAnswer(answer);
      const outcome = outcomes.find((o) => o.scenario === run.scenario && o.answer === described);
      if (outcome) outcome.requests++;
      else outcomes.push({ scenario: run.scenario, answer: described, requests: 1 });
      if (answer.kind === 'response' && answer.replayed) replays++;
      if (answer.kind === 'response' && answer.status === 201) keysWithPayment.add(`${account.length}:${account}${key}`);
    }
  }
  outcomes.sort((a, b) => SCENARIOS.indexOf(a.scenario) - SCENARIOS.indexOf(b.scenario) || answerOrder(a.answer, b.answer));
  const unexpected = runs.filter((run) => run.problems.length > 0).map(({ scenario, problems }) => ({ scenario, problems }));
  return {
    url,
    durationMs: Math.round(durationMs),
    scenarios: runs.length,
    requests,
    outcomes,
    replays,
    keysWithPayment: keysWithPayment.size,
    asExpected: runs.length - unexpected.length,
    unexpected,
  };
}

/** The outcome table: one row per scenario, one column per answer seen, and whether each scenario behaved. */
export function formatReport(report: TrafficReport, runs: readonly ScenarioRun[]): string {
  const answers = [...new Set(report.outcomes.map((outcome) => outcome.answer))].sort(answerOrder);
  const scenarios = SCENARIOS.filter((scenario) => runs.some((run) => run.scenario === scenario));
  const rows = scenarios.map((scenario) => {
    const ofScenario = runs.filter((run) => run.scenario === scenario);
    const cells = answers.map((answer) => String(report.outcomes.find((o) => o.scenario === scenario && o.answer === answer)?.requests ?? 0));
    const behaved = ofScenario.filter((run) => run.problems.length === 0).length;
    return [scenario, String(ofScenario.length), ...cells, `${behaved}/${ofScenario.length}`];
  });
  const table = formatTable(['scenario', 'runs', ...answers, 'as expected'], rows, ['left', 'right', ...answers.map(() => 'right' as const), 'right']);
  const lines = [
    '',
    table.trimEnd(),
    '',
    `${report.requests} requests in ${(report.durationMs / 1000).toFixed(1)} s to ${report.url}; ${report.replays} answered with Idempotent-Replayed: true.`,
    `${report.keysWithPayment} keys got a 201: the server holds exactly one payment for each.`,
    `${report.asExpected} of ${report.scenarios} scenarios behaved as an idempotent API must.`,
  ];
  const replayed = runs.find((run) => run.scenario === 'replay' && run.problems.length === 0)?.exchanges[0];
  if (replayed)
    lines.push(`Inspect a replayed key (DATABASE_URL as npm start printed it): npm run --silent cli -- inspect --scope ${replayed.account} --key ${replayed.key}`);
  for (const { scenario, problems } of report.unexpected.slice(0, 10)) lines.push(`  unexpected in ${scenario}: ${problems.join('; ')}`);
  if (report.unexpected.length > 10) lines.push(`  ... and ${report.unexpected.length - 10} more`);
  return lines.join('\n') + '\n';
}

/** 2xx first, replays next to their status, then other statuses, then answers that never came. */
function answerOrder(a: string, b: string): number {
  const rank = (answer: string) => (/^\d/.test(answer) ? Number.parseInt(answer, 10) * 2 + (answer.endsWith('replayed') ? 1 : 0) : 10_000 + answer.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}
