import { parser } from '@prometheus-io/lezer-promql';

type SyntaxNode = ReturnType<typeof parser.parse>['topNode'];

/** What the dashboard tests need to know about one PromQL expression, read from its lezer syntax tree. */
export interface PromqlAnalysis {
  /** Source excerpts around every error node; empty when the expression parses. */
  errors: string[];
  /** One entry per vector selector. */
  selectors: Array<{ name: { exact: string } | { regex: string }; labels: string[] }>;
  /** Labels named in `by (...)`, `on (...)` and matchers. */
  labels: Set<string>;
}

export function analyse(expr: string): PromqlAnalysis {
  const tree = parser.parse(expr);
  const result: PromqlAnalysis = { errors: [], selectors: [], labels: new Set() };
  tree.iterate({
    enter: (ref) => {
      if (ref.type.isError) result.errors.push(`${ref.from}: …${expr.slice(Math.max(0, ref.from - 20), ref.to + 20)}…`);
      if (ref.name === 'LabelName') result.labels.add(expr.slice(ref.from, ref.to));
      if (ref.name === 'VectorSelector') result.selectors.push(selectorOf(ref.node, expr));
    },
  });
  result.labels.delete('__name__');
  return result;
}

function selectorOf(node: SyntaxNode, expr: string): PromqlAnalysis['selectors'][number] {
  const text = (n: SyntaxNode) => expr.slice(n.from, n.to);
  const identifier = node.getChild('Identifier');
  let name: PromqlAnalysis['selectors'][number]['name'] | undefined = identifier ? { exact: text(identifier) } : undefined;
  const labels: string[] = [];
  for (const matcher of node.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher') ?? []) {
    const label = text(matcher.getChild('LabelName')!);
    const op = text(matcher.getChild('MatchOp')!);
    const value = JSON.parse(text(matcher.getChild('StringLiteral')!)) as string;
    if (label !== '__name__') labels.push(label);
    else if (op === '=~') name = { regex: value };
    else if (op === '=') name = { exact: value };
    else throw new Error(`unsupported __name__ matcher ${op} in ${expr}`);
  }
  if (!name) throw new Error(`a selector without a metric name in ${expr}`);
  return { name, labels };
}

/** Whether a selector's name matches a metric name, with PromQL's fully anchored regex semantics. */
export function nameMatches(name: PromqlAnalysis['selectors'][number]['name'], metric: string): boolean {
  return 'exact' in name ? name.exact === metric : new RegExp(`^(?:${name.regex})$`).test(metric);
}
