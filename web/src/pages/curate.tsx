import { useEffect, useState } from "preact/hooks";
import { datanetMetadata, datanetName, getConfig, hasRoute, index, request, type ContributionRow } from "../api";
import { useAsync, useStore } from "../store";
import { describeFlag, duplicateFlags, parseRows, type DupFlag } from "../lib";
import { Addr, ErrorBox, Hash, Loading, NeedsWallet, Table } from "../ui";
import { ABI, sendTx, wallet } from "../wallet";

const REASONS: [number, string][] = [
  [1, "spam"],
  [2, "off-topic"],
  [3, "duplicate"],
  [4, "low quality"],
];

async function loadQueue(datanetId: number) {
  const [d, pending, all] = await Promise.all([
    index.datanet(datanetId),
    index.contributions(`datanet_id=${datanetId}&status=pending`),
    index.contributions(`datanet_id=${datanetId}`),
  ]);
  // Duplicate flags: the same bytes (content hash) contributed before, in this Datanet.
  const firstByHash = new Map<string, number>();
  for (const c of all.items) if (!firstByHash.has(c.content_hash)) firstByHash.set(c.content_hash, c.contribution_id);
  const preview = await hasRoute("/v1/content/{cid}");
  // Row-level flags (exact and near), as the server flagged them at upload, recomputed here from
  // the public content: each pending contribution against earlier pending or approved ones.
  const flags = new Map<number, DupFlag[]>();
  if (preview) {
    const live = all.items.filter((c) => c.status === "pending" || c.status === "approved").sort((a, b) => a.contribution_id - b.contribution_id).slice(-60);
    const texts = await Promise.all(
      live.map((c) => request<string>(`/v1/content/${c.cid}`, { raw: true }).then((t) => ({ id: c.contribution_id, rows: parseRows(t) }), () => null)),
    );
    const loaded = texts.filter((x): x is { id: number; rows: any[] } => !!x);
    for (const c of pending.items) {
      const mine = loaded.find((x) => x.id === c.contribution_id);
      if (mine) flags.set(c.contribution_id, duplicateFlags(mine.rows, loaded.filter((x) => x.id < c.contribution_id)));
    }
  }
  return { d, pending: pending.items, firstByHash, preview, flags };
}

function Preview({ c }: { c: ContributionRow }) {
  const [text, error] = useAsync(() => request<string>(`/v1/content/${c.cid}`, { raw: true }), [c.cid]);
  if (error) return <span class="muted">{error}</span>;
  if (text === undefined) return <Loading />;
  return <pre class="preview">{text.split("\n").slice(0, 3).join("\n")}</pre>;
}

function Flags({ sameFile, flags, id }: { sameFile: number | null; flags: DupFlag[]; id: number }) {
  const exact = flags.filter((f) => f.kind === "exact").length;
  return (
    <div data-testid={`flags-${id}`} data-exact={exact} data-near={flags.length - exact}>
      {sameFile !== null && <div class="flag">same file as #{sameFile}</div>}
      {flags.length > 0 && (
        <details>
          <summary class="flag">
            {exact ? `${exact} exact` : ""}
            {exact && flags.length - exact ? ", " : ""}
            {flags.length - exact ? `${flags.length - exact} near` : ""} duplicate row{flags.length > 1 ? "s" : ""}
          </summary>
          <ul>
            {flags.slice(0, 10).map((f) => (
              <li key={f.line}>{describeFlag(f)}</li>
            ))}
          </ul>
        </details>
      )}
      {sameFile === null && !flags.length && <span class="muted">none</span>}
    </div>
  );
}

export function CuratePage({ preselect }: { preselect?: number }) {
  const w = useStore(wallet);
  const [datanets] = useAsync(async () => {
    const page = await index.datanets();
    return Promise.all(page.items.map(async (d) => ({ d, meta: await datanetMetadata(d), curators: (await index.datanet(d.datanet_id)).curators ?? [] })));
  }, []);
  const [datanetId, setDatanetId] = useState<number | null>(preselect ?? null);
  useEffect(() => {
    if (datanetId !== null || !datanets?.length) return;
    const mine = datanets.find((x) => w.account && x.curators.includes(w.account.toLowerCase()));
    setDatanetId((mine ?? datanets[0]).d.datanet_id);
  }, [datanets, w.account]);
  const [queue, error, reload] = useAsync(() => (datanetId === null ? Promise.resolve(null) : loadQueue(datanetId)), [datanetId]);
  const [picked, setPicked] = useState<Set<number>>(new Set());
  const [reason, setReason] = useState(1);
  const [failure, setFailure] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => setPicked(new Set()), [datanetId]);

  const isCurator = !!(queue && w.account && (queue.d.curators ?? []).includes(w.account.toLowerCase()));
  const toggle = (id: number) =>
    setPicked((p) => {
      const n = new Set(p);
      n.has(id) ? n.delete(id) : n.add(id);
      return n;
    });

  const act = async (what: "approve" | "reject") => {
    if (datanetId === null || !picked.size) return;
    setBusy(true);
    setFailure(null);
    const cfg = await getConfig();
    const ids = [...picked].sort((a, b) => a - b);
    try {
      if (what === "approve") {
        await sendTx(`Approve ${ids.length} contribution${ids.length > 1 ? "s" : ""}`, {
          address: cfg.contracts.datanets, abi: ABI.datanets, functionName: "approve", args: [BigInt(datanetId), ids.map(BigInt)],
        });
      } else {
        // The registry rejects one contribution per call (each may slash its own stake).
        for (const id of ids) {
          await sendTx(`Reject contribution ${id}`, { address: cfg.contracts.datanets, abi: ABI.datanets, functionName: "reject", args: [BigInt(id), reason] });
        }
      }
      setPicked(new Set());
      // The index follows the chain within a poll or two.
      setTimeout(reload, 1500);
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section>
      <h1>Curate</h1>
      <p class="lead">Review pending contributions, then approve or reject a batch with one wallet transaction.</p>
      {!datanets && <Loading what="Datanets" />}
      {datanets && (
        <label>
          <span>Datanet</span>
          <select data-testid="curate-datanet" value={datanetId ?? ""} onChange={(e) => setDatanetId(Number((e.target as HTMLSelectElement).value))}>
            {datanets.map(({ d, meta, curators }) => (
              <option key={d.datanet_id} value={d.datanet_id}>
                #{d.datanet_id} {datanetName(d, meta)}
                {w.account && curators.includes(w.account.toLowerCase()) ? " (you curate)" : ""}
              </option>
            ))}
          </select>
        </label>
      )}
      <ErrorBox error={error} />
      {queue && (
        <>
          {!isCurator && <p class="notice">{w.account ? "Your account is not a curator of this Datanet: the chain will refuse approvals." : "Connect a curator's wallet to approve or reject."}</p>}
          <Table
            caption="review queue"
            head={["", "#", "contributor", "rows", "bytes", "flags", queue.preview ? "preview" : "CID"]}
            empty="Nothing is waiting for review."
            rows={queue.pending.map((c) => {
              const first = queue.firstByHash.get(c.content_hash);
              return [
                <input type="checkbox" aria-label={`select contribution ${c.contribution_id}`} data-testid={`pick-${c.contribution_id}`} checked={picked.has(c.contribution_id)} onChange={() => toggle(c.contribution_id)} />,
                c.contribution_id,
                <Addr a={c.contributor} />,
                c.row_count,
                c.size,
                <Flags sameFile={first !== undefined && first !== c.contribution_id ? first : null} flags={queue.flags.get(c.contribution_id) ?? []} id={c.contribution_id} />,
                queue.preview ? <Preview c={c} /> : <Hash h={c.cid} />,
              ];
            })}
          />
          {queue.pending.length > 0 && (
            <NeedsWallet action="approve or reject">
              <div class="row">
                <button type="button" onClick={() => setPicked(new Set(queue.pending.map((c) => c.contribution_id)))}>
                  Select all
                </button>
                <button class="primary" data-testid="approve" disabled={!picked.size || busy} onClick={() => act("approve")}>
                  Approve {picked.size || ""}
                </button>
                <label class="inline">
                  <span>Reason</span>
                  <select value={reason} onChange={(e) => setReason(Number((e.target as HTMLSelectElement).value))}>
                    {REASONS.map(([v, l]) => (
                      <option value={v} key={v}>
                        {l}
                      </option>
                    ))}
                  </select>
                </label>
                <button class="danger" data-testid="reject" disabled={!picked.size || busy} onClick={() => act("reject")}>
                  Reject {picked.size || ""}
                </button>
              </div>
            </NeedsWallet>
          )}
          <ErrorBox error={failure} />
        </>
      )}
    </section>
  );
}
