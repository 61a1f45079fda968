import { useEffect, useState } from "preact/hooks";
import { decodeEventLog, getAddress, isAddress, parseUnits } from "viem";
import { getConfig, hasRoute, request } from "../api";
import { useAsync, useStore } from "../store";
import { ErrorBox, Loading, NeedsWallet } from "../ui";
import { ABI, ensureSignedIn, sendTx, wallet } from "../wallet";

const TASKS: [string, string][] = [
  ["classification", "classification (text + label)"],
  ["text", "text"],
  ["prompt_completion", "prompt / completion"],
];

function addresses(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The form's problems, shown before anything is stored or signed. */
export function formProblems(f: Record<string, any>): string[] {
  const out: string[] = [];
  if (!String(f.name).trim()) out.push("a name is required");
  if (String(f.name).length > 100) out.push("the name is longer than 100 characters");
  if (String(f.description).length > 5000) out.push("the description is longer than 5,000 characters");
  const labels = String(f.labels).split(",").map((s) => s.trim()).filter(Boolean);
  if (f.task === "classification" && labels.length < 2) out.push("a classification Datanet needs at least two labels");
  if (new Set(labels).size !== labels.length) out.push("labels repeat");
  const rows = Number(f.max_rows), bytes = Number(f.max_bytes);
  if (!Number.isInteger(rows) || rows < 1 || rows > 1_000_000) out.push("rows per file: a whole number from 1 to 1,000,000");
  if (!Number.isInteger(bytes) || bytes < 1 || bytes > 1_073_741_824) out.push("bytes per file: a whole number from 1 to 1,073,741,824");
  const bad = addresses(f.curators).filter((a) => !isAddress(a));
  if (bad.length) out.push(`not addresses: ${bad.join(", ")}`);
  if (!addresses(f.curators).length) out.push("at least one curator");
  if (f.treasury.trim() && !isAddress(f.treasury.trim())) out.push("the treasury is not an address");
  try {
    if (parseUnits(String(f.stake || "0"), 18) < 0n) out.push("the stake is negative");
  } catch {
    out.push("the stake is not a number");
  }
  return out;
}

export function CreateDatanetPage() {
  const w = useStore(wallet);
  const [available] = useAsync(() => hasRoute("/v1/datanets/metadata"), []);
  const [f, setF] = useState<Record<string, any>>({
    name: "", description: "", task: "classification", labels: "", license: "CC-BY-4.0", max_rows: 1000, max_bytes: 1_048_576,
    curators: "", treasury: "", stake: "0", allowlisted: false, slash: false,
  });
  const [step, setStep] = useState<string | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [done, setDone] = useState<{ id: number; cid: string } | null>(null);
  const [touched, setTouched] = useState(false);
  useEffect(() => {
    if (w.account) setF((x) => ({ ...x, curators: x.curators || w.account, treasury: x.treasury || w.account }));
  }, [w.account]);

  const set = (k: string) => (e: Event) => {
    const t = e.target as HTMLInputElement;
    setF({ ...f, [k]: t.type === "checkbox" ? t.checked : t.value });
  };
  const problems = formProblems(f);

  const submit = async () => {
    setTouched(true);
    setFailure(null);
    setDone(null);
    if (problems.length) return;
    try {
      setStep("Signing in with Ethereum…");
      await ensureSignedIn();
      setStep("Storing the metadata…");
      const labels = String(f.labels).split(",").map((s: string) => s.trim()).filter(Boolean);
      const { cid } = await request<{ cid: string }>("/v1/datanets/metadata", {
        method: "POST",
        auth: true,
        body: JSON.stringify({
          name: f.name.trim(), description: f.description.trim(), license: f.license.trim(), task: f.task, labels,
          max_rows_per_file: Number(f.max_rows), max_bytes_per_file: Number(f.max_bytes),
        }),
      });
      setStep("Creating the Datanet on chain (confirm in your wallet)…");
      const cfg = await getConfig();
      const receipt = await sendTx(`Create Datanet ${f.name.trim()}`, {
        address: cfg.contracts.datanets,
        abi: ABI.datanets,
        functionName: "createDatanet",
        args: [cid, f.license.trim(), addresses(f.curators).map((a) => getAddress(a)), getAddress((f.treasury.trim() || w.account) as string), parseUnits(String(f.stake || "0"), 18), !!f.allowlisted, !!f.slash],
      });
      let id = 0;
      for (const log of receipt.logs) {
        try {
          const ev = decodeEventLog({ abi: ABI.datanets, data: log.data, topics: log.topics }) as any;
          if (ev.eventName === "DatanetCreated") id = Number(ev.args.datanetId);
        } catch {
          /* another event */
        }
      }
      setDone({ id, cid });
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setStep(null);
    }
  };

  if (available === undefined) return <Loading />;
  return (
    <section>
      <h1>Create a Datanet</h1>
      <p class="lead">Describe the data you want, set its rules and curators; the metadata is stored by CID, then your wallet records the Datanet on chain.</p>
      {!available && <p class="notice">This server cannot store Datanet metadata (no <code>/v1/datanets/metadata</code>).</p>}
      <form
        class="card"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <label>
          <span>Name</span>
          <input data-testid="dn-name" value={f.name} onInput={set("name")} maxLength={100} required />
        </label>
        <label>
          <span>Description</span>
          <textarea data-testid="dn-description" value={f.description} onInput={set("description")} rows={3} maxLength={5000} />
        </label>
        <div class="fields">
          <label>
            <span>Task</span>
            <select data-testid="dn-task" value={f.task} onChange={set("task")}>
              {TASKS.map(([v, l]) => (
                <option key={v} value={v}>
                  {l}
                </option>
              ))}
            </select>
          </label>
          <label>
            <span>Labels (comma separated)</span>
            <input data-testid="dn-labels" value={f.labels} onInput={set("labels")} placeholder="billing, technical, shipping" />
          </label>
          <label>
            <span>Licence</span>
            <input data-testid="dn-license" value={f.license} onInput={set("license")} maxLength={100} />
          </label>
          <label>
            <span>Rows per file, at most</span>
            <input type="number" data-testid="dn-max-rows" min={1} value={f.max_rows} onInput={set("max_rows")} />
          </label>
          <label>
            <span>Bytes per file, at most</span>
            <input type="number" data-testid="dn-max-bytes" min={1} value={f.max_bytes} onInput={set("max_bytes")} />
          </label>
          <label>
            <span>Stake per contribution (PVN)</span>
            <input data-testid="dn-stake" inputMode="decimal" value={f.stake} onInput={set("stake")} />
          </label>
        </div>
        <label>
          <span>Curators (addresses, comma or space separated)</span>
          <textarea data-testid="dn-curators" value={f.curators} onInput={set("curators")} rows={2} />
        </label>
        <label>
          <span>Treasury (receives slashed stakes and the Datanet's fee share)</span>
          <input data-testid="dn-treasury" value={f.treasury} onInput={set("treasury")} placeholder={w.account ?? "0x…"} />
        </label>
        <label class="inline check">
          <input type="checkbox" data-testid="dn-allowlisted" checked={f.allowlisted} onChange={set("allowlisted")} />
          <span>Only allow-listed contributors</span>
        </label>{" "}
        <label class="inline check">
          <input type="checkbox" data-testid="dn-slash" checked={f.slash} onChange={set("slash")} />
          <span>Slash the stake of rejected contributions</span>
        </label>
        {touched && problems.length > 0 && (
          <ul class="errors" role="alert" data-testid="dn-problems">
            {problems.map((p) => (
              <li key={p}>{p}</li>
            ))}
          </ul>
        )}
        <NeedsWallet action="create a Datanet">
          <p>
            <button class="primary" type="submit" data-testid="create-datanet" disabled={!!step || !available}>
              Create Datanet
            </button>
          </p>
        </NeedsWallet>
        {step && (
          <p role="status" class="muted">
            {step}
          </p>
        )}
        <ErrorBox error={failure} />
        {done && (
          <p class="ok" aria-live="polite" data-testid="datanet-created">
            Datanet #{done.id} created, metadata <code>{done.cid}</code>. <a href={`#/datanets/${done.id}`}>Open it</a> or{" "}
            <a href={`#/contribute/${done.id}`}>contribute to it</a>.
          </p>
        )}
      </form>
    </section>
  );
}
