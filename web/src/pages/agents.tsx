import { useState } from "preact/hooks";
import { hasRoute, request } from "../api";
import { formatUnits18 } from "../lib";
import { useAsync } from "../store";
import { Addr, Card, ErrorBox, Hash, Loading, Table } from "../ui";
import { short } from "../wallet";
import "./agents.css";

// An agent's page: its signed actions as a DAG, each action opening to the model calls it relied on,
// their data ancestry (contributions, contributors, Datanets with shares) and what its earnings owe
// back. Everything comes from GET /v1/agents/... (backend/provenant/api/agents.py), which serves only
// actions of published bundles that pass `verify action`.

type Action = {
  hash: string;
  seq: number;
  kind: string;
  parents: string[];
  children: number;
  timestamp: number;
  model_call_ids: string[];
  value_moved: string;
  value_earned: string;
  royalty_ppm: number;
  royalty_wei: string;
  input_hash: string;
  output_hash: string;
  signer: string;
  detail: Record<string, any>;
};
type Share = { id: string; share_ppm: number; score?: number };
type Receipt = {
  call_id: string;
  model_id: number;
  model_name: string;
  fee: string;
  consumer: string;
  lineage_root: string;
  attribution: { contributions?: Share[]; contributors?: Share[]; datanets?: Share[] };
};
type AgentInfo = {
  agent_id: number;
  owner: string;
  operator: string;
  agent_uri: string;
  registration: { name: string; description: string; services: { name: string; endpoint: string }[] } | null;
  bundles: { file: string; head: string | null; ok: boolean; reasons: string[] }[];
  actions: number;
  model_calls: number;
  earned_wei: string;
  royalty_wei: string;
  moved_wei: string;
};
type Owed = { role: string; who: string; share_ppm: number; amount_wei: string };
type ActionDetail = {
  action: Action;
  ok: boolean;
  reasons: string[];
  checks: string[];
  beneath: number;
  model_calls: Receipt[];
  ancestry?: {
    shares_ppm: Record<string, Record<string, number>>;
    unattributed_ppm: Record<string, number>;
    call_weights_ppm: Record<string, number>;
    royalty_pool_wei: string;
    dust_wei: string;
    owed: Owed[];
  };
};

const pct = (ppm: number) => `${(ppm / 10_000).toFixed(2)}%`;

async function agentsMounted(): Promise<boolean> {
  return hasRoute("/v1/agents/{agent_id}");
}

export function AgentsPage() {
  const [list, error] = useAsync(async () => {
    if (!(await agentsMounted())) throw new Error("This server does not serve agents (GET /v1/agents is not mounted).");
    return request<{ agents: { agent_id: number; name: string; owner: string; operator: string; published_bundles: number }[] }>("/v1/agents");
  }, []);
  return (
    <section>
      <h1>Agents</h1>
      <p class="lead">ERC-8004 agents registered on chain. Each action they publish carries a signed receipt of the data beneath it.</p>
      <ErrorBox error={error} />
      {!list && !error && <Loading what="agents" />}
      {list && (
        <Table
          caption="agents"
          head={["agent", "name", "owner", "operator", "published bundles"]}
          empty="No agents yet. Register one with `provenant agent register`."
          rows={list.agents.map((a) => [
            <a href={`#/agents/${a.agent_id}`}>#{a.agent_id}</a>,
            a.name || "—",
            <Addr a={a.owner} />,
            <Addr a={a.operator} />,
            a.published_bundles,
          ])}
        />
      )}
    </section>
  );
}

/** Layered layout: an action's layer is one more than its deepest parent's; layers run top to bottom. */
function layout(actions: Action[]) {
  const byHash = new Map(actions.map((a) => [a.hash, a]));
  const layer = new Map<string, number>();
  const depth = (a: Action): number => {
    const known = layer.get(a.hash);
    if (known !== undefined) return known;
    layer.set(a.hash, 0); // guards a (never verified) cycle
    const ps = a.parents.map((p) => byHash.get(p)).filter((p): p is Action => !!p);
    const d = ps.length ? 1 + Math.max(...ps.map(depth)) : 0;
    layer.set(a.hash, d);
    return d;
  };
  const rows: Action[][] = [];
  for (const a of actions) {
    const d = depth(a);
    (rows[d] ??= []).push(a);
  }
  rows.forEach((r) => r.sort((x, y) => x.seq - y.seq));
  return rows;
}

const KIND_LABEL: Record<string, string> = { tool_call: "tool", model_call: "model", payment: "payment", result: "result" };

function Graph({ agentId, actions, calls, selected }: { agentId: number; actions: Action[]; calls: Record<string, Receipt>; selected?: string }) {
  const rows = layout(actions);
  const nodeW = 118;
  const nodeH = 38;
  const gapX = 14;
  const gapY = 34;
  const widest = Math.max(...rows.map((r) => r.length), 1);
  const width = widest * (nodeW + gapX) + gapX;
  const height = rows.length * (nodeH + gapY) + gapY / 2;
  const pos = new Map<string, [number, number]>();
  rows.forEach((r, i) => {
    const offset = (width - r.length * (nodeW + gapX) + gapX) / 2;
    r.forEach((a, j) => pos.set(a.hash, [offset + j * (nodeW + gapX), gapY / 2 + i * (nodeH + gapY)]));
  });
  const label = (a: Action) => {
    if (a.kind === "model_call") {
      const r = calls[a.model_call_ids[0]];
      return r ? r.model_name : (a.detail.model ?? `model ${a.detail.model_id ?? ""}`);
    }
    if (a.kind === "tool_call") return String(a.detail.tool ?? "tool");
    if (a.kind === "result") return a.value_earned !== "0" ? `earned ${formatUnits18(a.value_earned)}` : "result";
    return `${formatUnits18(a.value_moved)} PVN`;
  };
  return (
    <figure class="lineage">
      <div class="scroll">
        <svg viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img" data-testid="agent-graph"
          aria-label={`agent ${agentId}: ${actions.length} actions in ${rows.length} layers`}>
          <defs>
            <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
              <path d="M 0 0 L 10 5 L 0 10 z" class="arrow" />
            </marker>
          </defs>
          {actions.flatMap((a) =>
            a.parents.map((p) => {
              const from = pos.get(p);
              const to = pos.get(a.hash);
              if (!from || !to) return null;
              const [x1, y1] = [from[0] + nodeW / 2, from[1] + nodeH];
              const [x2, y2] = [to[0] + nodeW / 2, to[1]];
              return <path key={p + a.hash} d={`M${x1},${y1} C${x1},${y1 + gapY / 2} ${x2},${y2 - gapY / 2} ${x2},${y2 - 2}`} class="edge" marker-end="url(#arrow)" data-testid="agent-edge" />;
            }),
          )}
          {actions.map((a) => {
            const [x, y] = pos.get(a.hash)!;
            const text = label(a);
            return (
              <a key={a.hash} href={`#/agents/${agentId}/${a.hash}`} data-testid="action-node" data-kind={a.kind} data-seq={a.seq}
                aria-label={`action ${a.seq}: ${a.kind}, ${text}`} aria-current={selected === a.hash ? "true" : undefined}>
                <rect x={x} y={y} width={nodeW} height={nodeH} rx={5} class={`node action-${a.kind} ${selected === a.hash ? "selected" : ""}`} />
                <text x={x + 6} y={y + 15} class="node-kind">
                  #{a.seq} {KIND_LABEL[a.kind] ?? a.kind}
                </text>
                <text x={x + 6} y={y + 30}>{text.length > 17 ? text.slice(0, 16) + "…" : text}</text>
              </a>
            );
          })}
        </svg>
      </div>
      <figcaption class="muted">Each arrow runs from a parent action to the action that builds on it; select an action to open its model calls and data ancestry.</figcaption>
    </figure>
  );
}

function ShareList({ title, rows, link }: { title: string; rows: [string, number][]; link?: (k: string) => string | undefined }) {
  const max = Math.max(...rows.map((r) => r[1]), 1);
  return (
    <div>
      <h3>{title}</h3>
      {!rows.length ? (
        <p class="muted">none</p>
      ) : (
        <ul class="bars">
          {rows.map(([k, v]) => {
            const href = link?.(k);
            return (
              <li key={k}>
                <span class="bar-label">{href ? <a href={href}>{k}</a> : k}</span>
                <span class="bar" style={{ width: `${(100 * v) / max}%` }} />
                <span class="bar-value">{pct(v)}</span>
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
}

function sorted(m: Record<string, number> | undefined): [string, number][] {
  return Object.entries(m ?? {}).sort((a, b) => b[1] - a[1]);
}

function ActionPanel({ agentId, hash }: { agentId: number; hash: string }) {
  const [d, error] = useAsync(() => request<ActionDetail>(`/v1/agents/${agentId}/actions/${hash}`), [agentId, hash]);
  if (error) return <ErrorBox error={error} />;
  if (!d) return <Loading what="the action" />;
  const a = d.action;
  const anc = d.ancestry;
  return (
    <section data-testid="action-detail" aria-label={`action ${a.seq}`}>
      <Card title={`Action #${a.seq}: ${a.kind.replace("_", " ")}`} id="action">
        <p data-testid="action-verdict" class={d.ok ? "ok" : "error"}>
          {d.ok ? `Verified: this action and the ${d.beneath - 1} beneath it are signed by the agent's registered operator, over model-call receipts signed by the models' registered servers.` : `Not verified: ${d.reasons[0]}`}
        </p>
        <dl>
          <dt>Hash</dt>
          <dd>
            <Hash h={a.hash} />
          </dd>
          <dt>Time</dt>
          <dd>{new Date(a.timestamp * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC</dd>
          <dt>Parents</dt>
          <dd>
            {a.parents.length
              ? a.parents.map((p) => (
                  <a key={p} href={`#/agents/${agentId}/${p}`} class="chip">
                    {p.slice(0, 10)}…
                  </a>
                ))
              : "none (a root)"}
          </dd>
          <dt>Value moved</dt>
          <dd>{formatUnits18(a.value_moved)} PVN</dd>
          <dt>Value earned</dt>
          <dd data-testid="action-earned">{formatUnits18(a.value_earned)} PVN</dd>
          <dt>Royalty routed back</dt>
          <dd>
            {pct(a.royalty_ppm)} = {formatUnits18(a.royalty_wei)} PVN
          </dd>
        </dl>
      </Card>
      <Card title="Model calls this action relied on" id="calls">
        {d.model_calls.length ? (
          d.model_calls.map((r) => (
            <div key={r.call_id} class="call" data-testid="model-call">
              <p>
                <a href={`#/models/${r.model_id}`}>{r.model_name}</a> · call <Hash h={r.call_id} /> · fee {formatUnits18(r.fee)} PVN
              </p>
              <Table
                caption={`attribution of call ${r.call_id}`}
                head={["contribution", "share"]}
                empty="no contribution carried weight"
                rows={(r.attribution.contributions ?? []).map((c) => [`#${c.id}`, pct(c.share_ppm)])}
              />
              <p class="muted">
                Contributors:{" "}
                {(r.attribution.contributors ?? []).map((c) => (
                  <span key={c.id} class="chip" title={c.id}>
                    {short(c.id)} {pct(c.share_ppm)}
                  </span>
                ))}{" "}
                Datanets:{" "}
                {(r.attribution.datanets ?? []).map((c) => (
                  <a key={c.id} class="chip" href={`#/datanets/${c.id}`}>
                    Datanet {c.id} {pct(c.share_ppm)}
                  </a>
                ))}
              </p>
            </div>
          ))
        ) : (
          <p class="muted">This action used no model call itself; its ancestry comes from the actions beneath it.</p>
        )}
      </Card>
      {anc && (
        <Card title={`Data ancestry (over ${d.beneath} action${d.beneath === 1 ? "" : "s"})`} id="ancestry">
          <div class="grid" data-testid="ancestry">
            <ShareList title="Models" rows={sorted(anc.shares_ppm.models).map(([k, v]) => [`model ${k}`, v])} link={(k) => `#/models/${k.replace("model ", "")}`} />
            <ShareList title="Datanets" rows={sorted(anc.shares_ppm.datanets).map(([k, v]) => [`Datanet ${k}`, v])} link={(k) => `#/datanets/${k.replace("Datanet ", "")}`} />
            <ShareList title="Contributors" rows={sorted(anc.shares_ppm.contributors).map(([k, v]) => [short(k), v])} />
            <ShareList title="Contributions" rows={sorted(anc.shares_ppm.contributions).map(([k, v]) => [`#${k}`, v])} />
          </div>
          <p class="muted">Each model call weighs by its fee (or the weights the agent signed); shares are floored to ppm, the rest is unattributed.</p>
        </Card>
      )}
      {anc && (
        <Card title="Earnings routed back" id="owed">
          <p>
            Royalty pool: <strong data-testid="royalty-pool">{formatUnits18(anc.royalty_pool_wei)} PVN</strong> (rounding dust kept by the agent: {anc.dust_wei} wei)
          </p>
          <div data-testid="owed">
            <Table
              caption="who is owed what"
              head={["role", "who", "share", "owed (PVN)"]}
              empty="This action and those beneath it earned nothing."
              rows={(anc.royalty_pool_wei === "0" ? [] : anc.owed).map((r) => [
                r.role,
                r.role === "contributor" || r.role === "owner" ? <Addr a={r.who} /> : r.role === "model" ? <a href={`#/models/${r.who}`}>model {r.who}</a> : r.who,
                pct(r.share_ppm),
                formatUnits18(r.amount_wei),
              ])}
            />
          </div>
        </Card>
      )}
    </section>
  );
}

export function AgentPage({ id, action }: { id: number; action?: string }) {
  const [data, error] = useAsync(async () => {
    if (!(await agentsMounted())) throw new Error("This server does not serve agents (GET /v1/agents is not mounted).");
    const [info, dag] = await Promise.all([
      request<AgentInfo>(`/v1/agents/${id}`),
      request<{ actions: Action[]; model_calls: Record<string, Receipt> }>(`/v1/agents/${id}/actions`),
    ]);
    return { info, dag };
  }, [id]);
  const [showBad, setShowBad] = useState(false);
  if (error) return <ErrorBox error={error} />;
  if (!data) return <Loading what={`agent ${id}`} />;
  const { info, dag } = data;
  const head = action ?? [...dag.actions].reverse().find((a) => a.kind === "result")?.hash ?? dag.actions[dag.actions.length - 1]?.hash;
  const bad = info.bundles.filter((b) => !b.ok);
  return (
    <section class="agent-page">
      <p>
        <a href="#/agents">← All agents</a>
      </p>
      <h1 data-testid="agent-title">
        {info.registration?.name ?? `Agent ${id}`} <span class="muted">#{id}</span>
      </h1>
      {info.registration?.description && <p class="lead">{info.registration.description}</p>}
      <div class="grid">
        <Card title="Identity" id="identity">
          <dl>
            <dt>Owner</dt>
            <dd>
              <Addr a={info.owner} />
            </dd>
            <dt>Operator (signs receipts)</dt>
            <dd>
              <Addr a={info.operator} />
            </dd>
            <dt>Registration</dt>
            <dd>
              <Hash h={info.agent_uri} />
            </dd>
            {(info.registration?.services ?? []).map((s) => [
              <dt key={`n${s.name}`}>{s.name}</dt>,
              <dd key={`e${s.name}`}>
                <code>{s.endpoint}</code>
              </dd>,
            ])}
          </dl>
        </Card>
        <Card title="Earnings" id="earnings">
          <dl>
            <dt>Verified actions</dt>
            <dd data-testid="agent-actions">{info.actions}</dd>
            <dt>Model calls</dt>
            <dd>{info.model_calls}</dd>
            <dt>Paid out</dt>
            <dd>{formatUnits18(info.moved_wei)} PVN</dd>
            <dt>Earned</dt>
            <dd data-testid="agent-earned">{formatUnits18(info.earned_wei)} PVN</dd>
            <dt>Routed back to the data</dt>
            <dd data-testid="agent-royalty">{formatUnits18(info.royalty_wei)} PVN</dd>
          </dl>
        </Card>
      </div>
      {bad.length > 0 && (
        <p class="notice" role="status">
          {bad.length} published bundle{bad.length === 1 ? "" : "s"} did not verify and {bad.length === 1 ? "is" : "are"} not shown.{" "}
          <button class="link" onClick={() => setShowBad(!showBad)}>
            {showBad ? "Hide" : "Why?"}
          </button>
          {showBad && (
            <ul>
              {bad.map((b) => (
                <li key={b.file}>
                  <code>{b.file}</code>: {b.reasons[0]}
                </li>
              ))}
            </ul>
          )}
        </p>
      )}
      <Card title="Actions" id="actions">
        {dag.actions.length ? (
          <Graph agentId={id} actions={dag.actions} calls={dag.model_calls} selected={head} />
        ) : (
          <p class="muted">This agent has published no verified action yet.</p>
        )}
      </Card>
      {head && <ActionPanel agentId={id} hash={head} />}
    </section>
  );
}
