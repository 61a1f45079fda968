import { index, type ModelDetail } from "../api";
import { formatUnits18 } from "../lib";
import { useAsync } from "../store";
import { Addr, Card, ErrorBox, Hash, Loading, Table } from "../ui";
import { short } from "../wallet";

export function ModelsPage() {
  const [page, error] = useAsync(() => index.models(), []);
  return (
    <section>
      <h1>Models</h1>
      <p class="lead">Every model registered on chain, with its lineage and where its fees went.</p>
      <ErrorBox error={error} />
      {!page && !error && <Loading what="models" />}
      {page && (
        <Table
          caption="models"
          head={["model", "base", "owner", "price per call", "parent"]}
          empty="No models yet. Train one with `provenant train`."
          rows={page.items.map((m) => [
            <a href={`#/models/${m.model_id}`}>{m.name}</a>,
            m.base_model ?? "—",
            <Addr a={m.owner} />,
            `${formatUnits18(m.price_per_call)} PVN`,
            m.parent_id ? <a href={`#/models/${m.parent_id}`}>#{m.parent_id}</a> : "—",
          ])}
        />
      )}
    </section>
  );
}

/** model -> Datanets -> contributions -> contributors, as an SVG picture (readable as a list too). */
function Lineage({ m }: { m: ModelDetail }) {
  const contributions = m.lineage.contributions;
  const datanets = m.lineage.datanet_ids;
  const contributors = [...new Set(contributions.map((c) => c.contributor))];
  const cols = [
    [{ key: "m", label: m.name, href: `#/models/${m.model_id}` }],
    datanets.map((d) => ({ key: `d${d}`, label: `Datanet ${d}`, href: `#/datanets/${d}` })),
    contributions.map((c) => ({ key: `c${c.contribution_id}`, label: `#${c.contribution_id} (${c.status})`, href: `#/datanets/${c.datanet_id}` })),
    contributors.map((a) => ({ key: `a${a}`, label: short(a), href: "" })),
  ];
  const rowH = 26;
  const colW = 190;
  const height = Math.max(...cols.map((c) => c.length), 1) * rowH + 20;
  const pos = new Map<string, [number, number]>();
  cols.forEach((col, i) => {
    const offset = (height - col.length * rowH) / 2;
    col.forEach((n, j) => pos.set(n.key, [10 + i * colW, offset + j * rowH + rowH / 2]));
  });
  const edges: [string, string][] = [
    ...datanets.map((d) => ["m", `d${d}`] as [string, string]),
    ...contributions.map((c) => [`d${c.datanet_id}`, `c${c.contribution_id}`] as [string, string]),
    ...contributions.map((c) => [`c${c.contribution_id}`, `a${c.contributor}`] as [string, string]),
  ];
  const width = 10 + 3 * colW + 160;
  return (
    <figure class="lineage">
      <div class="scroll">
        <svg viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img" aria-label={`lineage of ${m.name}: ${datanets.length} Datanets, ${contributions.length} contributions, ${contributors.length} contributors`} data-testid="lineage">
          {edges.map(([a, b]) => {
            const p = pos.get(a);
            const q = pos.get(b);
            if (!p || !q) return null;
            return <path key={a + b} d={`M${p[0] + 150},${p[1]} C${p[0] + 170},${p[1]} ${q[0] - 20},${q[1]} ${q[0]},${q[1]}`} class="edge" />;
          })}
          {cols.flat().map((n) => {
            const [x, y] = pos.get(n.key)!;
            const body = (
              <g>
                <rect x={x} y={y - 10} width={150} height={20} rx={4} class={`node node-${n.key[0]}`} />
                <text x={x + 6} y={y + 4} class={n.key === "m" ? "on-accent" : undefined}>
                  {n.label.length > 22 ? n.label.slice(0, 21) + "…" : n.label}
                </text>
              </g>
            );
            return n.href ? (
              <a key={n.key} href={n.href}>
                {body}
              </a>
            ) : (
              <g key={n.key}>{body}</g>
            );
          })}
        </svg>
      </div>
      <figcaption class="muted">
        {m.name} ← {datanets.length} Datanet{datanets.length === 1 ? "" : "s"} ← {contributions.length} contributions ← {contributors.length} contributors
      </figcaption>
    </figure>
  );
}

function Bars({ rows }: { rows: [string, number][] }) {
  const max = Math.max(...rows.map((r) => r[1]), 1);
  return (
    <ul class="bars">
      {rows.map(([label, v]) => (
        <li key={label}>
          <span class="bar-label">{label}</span>
          <span class="bar" style={{ width: `${(100 * v) / max}%` }} />
          <span class="bar-value">{v}</span>
        </li>
      ))}
    </ul>
  );
}

export function ModelPage({ id }: { id: number }) {
  const [m, error] = useAsync(() => index.model(id), [id]);
  if (error) return <ErrorBox error={error} />;
  if (!m) return <Loading what={`model ${id}`} />;
  const f = m.fees;
  const rowsBy = new Map<string, number>();
  for (const c of m.lineage.contributions) rowsBy.set(short(c.contributor), (rowsBy.get(short(c.contributor)) ?? 0) + 1);
  return (
    <section>
      <p>
        <a href="#/models">← All models</a>
      </p>
      <h1 data-testid="model-title">{m.name}</h1>
      <div class="row">
        <a class="button primary" href={`#/playground/${encodeURIComponent(m.name)}`}>
          Try it in the playground
        </a>
      </div>
      <Card title="Lineage" id="lineage">
        <Lineage m={m} />
      </Card>
      <div class="grid">
        <Card title="Fees" id="fees">
          <dl>
            <dt>Fees in</dt>
            <dd data-testid="fees-in">{formatUnits18(f.fees_in)} PVN</dd>
            <dt>Paid out</dt>
            <dd data-testid="fees-out">{formatUnits18(f.paid_out)} PVN</dd>
            <dt>to contributors (claimed)</dt>
            <dd>{formatUnits18(f.claimed)}</dd>
            <dt>claimable</dt>
            <dd>{formatUnits18(f.claimable)}</dd>
            <dt>to the owner</dt>
            <dd>{formatUnits18(f.owner_paid)}</dd>
            <dt>to the protocol</dt>
            <dd>{formatUnits18(f.protocol_paid)}</dd>
            <dt>still in escrow</dt>
            <dd>{formatUnits18(f.still_escrowed)}</dd>
          </dl>
        </Card>
        <Card title="Record" id="record">
          <dl>
            <dt>Base model</dt>
            <dd>{m.base_model ?? "—"}</dd>
            <dt>Owner</dt>
            <dd>
              <Addr a={m.owner} />
            </dd>
            <dt>Serving key</dt>
            <dd>
              <Addr a={m.server} />
            </dd>
            <dt>Price per call</dt>
            <dd>{formatUnits18(m.price_per_call)} PVN</dd>
            <dt>Lineage root</dt>
            <dd>
              <Hash h={m.lineage_root} />
            </dd>
            <dt>Adapter</dt>
            <dd>
              <Hash h={m.adapter_cid ?? m.adapter_hash} />
            </dd>
            <dt>Versions</dt>
            <dd>
              {m.lineage.parent_id ? <a href={`#/models/${m.lineage.parent_id}`}>parent #{m.lineage.parent_id}</a> : "first version"}
              {m.lineage.children.map((c) => (
                <span key={c}>
                  {" "}
                  · <a href={`#/models/${c}`}>child #{c}</a>
                </span>
              ))}
            </dd>
          </dl>
        </Card>
        <Card title="Contributions per contributor" id="weights">
          <Bars rows={[...rowsBy.entries()].sort((a, b) => b[1] - a[1])} />
          <p class="muted">Per-epoch attribution shares are in each epoch's published results (below).</p>
        </Card>
      </div>
      <Card title="Settlement epochs" id="epochs">
        <Table
          caption="epochs"
          head={["epoch", "fees", "claim cap", "payout root", "results"]}
          empty="No epoch settled yet."
          rows={m.epochs.map((e) => [e.epoch, formatUnits18(e.fee_total), formatUnits18(e.claim_cap), <Hash h={e.payout_root} />, <Hash h={e.results_cid} />])}
        />
      </Card>
    </section>
  );
}
