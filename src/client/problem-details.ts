import { PROBLEMS, problemType, type ProblemName } from '../protocol.js';

/** An RFC 9457 problem as received: `type` defaults to `about:blank`; extension members are kept. */
export interface ProblemDetails {
  type: string;
  title?: string;
  status?: number;
  detail?: string;
  instance?: string;
  [member: string]: unknown;
}

const JSON_MEDIA_TYPE = /^application\/(?:problem\+)?json\s*(?:;|$)/i;

/**
 * The problem details of an error answer, read from a clone so the caller can still read the body; undefined
 * for an answer that is not JSON or not an object.
 */
export async function readProblem(response: Response): Promise<ProblemDetails | undefined> {
  if (response.status < 400 || !JSON_MEDIA_TYPE.test(response.headers.get('content-type') ?? '')) return undefined;
  let body: unknown;
  try {
    body = await response.clone().json();
  } catch {
    // A malformed body is no problem object; an aborted read is seen by the caller on its signals.
    return undefined;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const members = body as Record<string, unknown>;
  return { ...members, type: typeof members.type === 'string' ? members.type : 'about:blank' };
}

/** Whether a problem is one of this library's, by its `type` URI (or a `code` equal to its slug). */
export function isProblem(problem: ProblemDetails | undefined, name: ProblemName): boolean {
  if (!problem) return false;
  return problem.type === problemType(name) || problem.code === PROBLEMS[name].slug;
}
