import { useState } from "preact/hooks";
import { datanetMetadata, datanetName, index, type DatanetRow, type ModelDetail } from "../api";
import { formatUnits18 } from "../lib";
import { useAsync } from "../store";
import { Addr, Card, ErrorBox, Hash, Loading, Status, Table } from "../ui";

type Listed = DatanetRow & { meta: Record<string, any> | null };

async function loadDatanets(): Promise<Listed[]> {
  const page = await index.datanets();
  return Promise.all(page.items.map(async (d) => ({ ...d, meta: await datanetMetadata(d) })));
}

export function DatanetsPage() {
  const [list, error] = useAsync(loadDatanets, []);
  const [q, setQ] = useState("");
  const needle = q.trim().toLowerCase();
  const shown = (list ?? []).filter(
    (d) =>
      !needle ||
      [String(d.datanet_id), datanetName(d, d.meta), d.meta?.description ?? "", d.owner, d.license, d.meta?.task ?? ""].some((f) =>
        String(f).toLowerCase().includes(needle),
      ),
  );
  return (
    <section>
      <h1>Datanets</h1>
      <p class="lead">Pools of training data, curated on chain. Every model trained on one pays back the people whose data carried the weight.</p>
      <p>
        <a class="button" href="#/datanets/new" data-testid="new-datanet">
          Create a Datanet
        </a>
      </p>
      <label class="search">
        <span>Search Datanets</span>
        <input type="search" value={q} onInput={(e) => setQ((e.target as HTMLInputElement).value)} placeholder="name, id, owner, licence, task" data-testid="datanet-search" />
      </label>
      <ErrorBox error={error} />
      {!list && !error && <Loading what="Datanets" />}
      {list && (
        <ul class="cards" data-testid="datanet-list">
          {shown.map((d) => (
            <li key={d.datanet_id} class="card">
              <h2>
                <a href={`#/datanets/${d.datanet_id}`}>{datanetName(d, d.meta)}</a>
              </h2>
              {d.meta?.description && <p>{d.meta.description}</p>}
              <p class="muted">
                #{d.datanet_id} · {d.meta?.task ?? "task unknown"} · licence {d.license || "—"} · owner <Addr a={d.owner} /> · stake {formatUnits18(d.stake)}
              </p>
            </li>
          ))}
          {!shown.length && <li class="muted">{list.length ? "No Datanet matches." : "No Datanets yet: create the first one."}</li>}
        </ul>
      )}
    </section>
  );
}

async function loadDatanet(id: number) {
  const d = await index.datanet(id);
  const [meta, contributions, models] = await Promise.all([
    datanetMetadata(d),
    index.contributions(`datanet_id=${id}`),
    Promise.all((d.used_by_models ?? []).map((m) => index.model(m))),
  ]);
  return { d, meta, contributions: contributions.items, models };
}

function earnings(models: ModelDetail[]) {
  let fees = 0n;
  let claimed = 0n;
  for (const m of models) {
    fees += BigInt(m.fees?.fees_in ?? 0);
    claimed += BigInt(m.fees?.claimed ?? 0);
  }
  return { fees, claimed };
}

export function DatanetPage({ id }: { id: number }) {
  const [data, error] = useAsync(() => loadDatanet(id), [id]);
  if (error) return <ErrorBox error={error} />;
  if (!data) return <Loading what={`Datanet ${id}`} />;
  const { d, meta, contributions, models } = data;
  const byContributor = new Map<string, { n: number; approved: number; rows: number }>();
  for (const c of contributions) {
    const x = byContributor.get(c.contributor) ?? { n: 0, approved: 0, rows: 0 };
    x.n++;
    if (c.status === "approved") {
      x.approved++;
      x.rows += Number(c.row_count);
    }
    byContributor.set(c.contributor, x);
  }
  const e = earnings(models);
  return (
    <section>
      <p>
        <a href="#/datanets">← All Datanets</a>
      </p>
      <h1 data-testid="datanet-title">{datanetName(d, meta)}</h1>
      {meta?.description && <p class="lead">{meta.description}</p>}
      <div class="row">
        <a class="button primary" href={`#/contribute/${id}`}>
          Contribute to this Datanet
        </a>
        <a class="button" href={`#/curate/${id}`}>
          Review queue
        </a>
      </div>
      <div class="grid">
        <Card title="Rules" id="rules">
          <dl>
            <dt>Task</dt>
            <dd>{meta?.task ?? "—"}</dd>
            {meta?.labels && (
              <>
                <dt>Labels</dt>
                <dd>{meta.labels.join(", ")}</dd>
              </>
            )}
            <dt>Rows per file</dt>
            <dd>{meta ? meta.max_rows_per_file ?? 1000 : "—"}</dd>
            <dt>Bytes per file</dt>
            <dd>{meta ? meta.max_bytes_per_file ?? 1048576 : "—"}</dd>
            <dt>Licence</dt>
            <dd>{d.license || "—"}</dd>
            <dt>Stake per contribution</dt>
            <dd>{formatUnits18(d.stake)} PVN</dd>
            <dt>Allow-listed</dt>
            <dd>{d.allowlisted ? "yes" : "no, anyone may contribute"}</dd>
            <dt>Slash on reject</dt>
            <dd>{d.slash_on_reject ? "yes" : "no"}</dd>
            <dt>Version</dt>
            <dd>{d.version}</dd>
            <dt>Metadata</dt>
            <dd>
              <Hash h={d.metadata_cid} />
            </dd>
          </dl>
          {!meta && <p class="muted">This server does not expose Datanet metadata yet; the server checks a file's rules on upload.</p>}
        </Card>
        <Card title="Curators" id="curators">
          <ul>
            {(d.curators ?? []).map((c) => (
              <li key={c}>
                <Addr a={c} />
              </li>
            ))}
          </ul>
          <p class="muted">Owner <Addr a={d.owner} /> · treasury <Addr a={d.treasury} /></p>
        </Card>
        <Card title="What it has earned" id="earned">
          <p>
            Fees into models trained on it: <strong data-testid="datanet-fees">{formatUnits18(e.fees)} PVN</strong>
          </p>
          <p>Claimed by contributors of those models: {formatUnits18(e.claimed)} PVN</p>
        </Card>
      </div>
      <Card title={`Contributions (${contributions.length})`} id="contributions">
        <p class="muted">
          {Object.entries(d.contributions_by_status ?? {})
            .map(([s, n]) => `${n} ${s}`)
            .join(" · ") || "none yet"}
        </p>
        <Table
          caption="contributions"
          head={["#", "contributor", "rows", "bytes", "status", "CID"]}
          empty="No contributions yet."
          rows={contributions.map((c) => [c.contribution_id, <Addr a={c.contributor} />, c.row_count, c.size, <Status s={c.status} />, <Hash h={c.cid} />])}
        />
      </Card>
      <Card title={`Contributors (${byContributor.size})`} id="contributors">
        <Table
          caption="contributors"
          head={["contributor", "contributions", "approved", "approved rows"]}
          empty="No contributors yet."
          rows={[...byContributor.entries()].map(([a, x]) => [<Addr a={a} />, x.n, x.approved, x.rows])}
        />
      </Card>
      <Card title={`Models trained on it (${models.length})`} id="models">
        <Table
          caption="models"
          head={["model", "owner", "fees in", "paid out"]}
          empty="No model uses this Datanet yet."
          rows={models.map((m) => [<a href={`#/models/${m.model_id}`}>{m.name}</a>, <Addr a={m.owner} />, formatUnits18(m.fees?.fees_in), formatUnits18(m.fees?.paid_out)])}
        />
      </Card>
    </section>
  );
}
