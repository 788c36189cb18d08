import type { Context } from 'koa';

/** An RFC 9457 problem as the example services send it. */
export interface ExampleProblem {
  type: string;
  title: string;
  status: number;
  detail?: string;
}

/** Answers with a problem+json body. (The library answers its own problems; this is the examples' side.) */
export function respondProblem(ctx: Context, problem: ExampleProblem): void {
  ctx.status = problem.status;
  ctx.type = 'application/problem+json';
  ctx.body = JSON.stringify(problem);
}
