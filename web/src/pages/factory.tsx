import { useEffect, useRef, useState } from "preact/hooks";
import { decodeEventLog, formatUnits, parseUnits } from "viem";
import { datanetMetadata, datanetName, getConfig, hasRoute, index, request } from "../api";
import { useAsync, useStore } from "../store";
import { ErrorBox, Hash, Loading, NeedsWallet, Status, Table } from "../ui";
import { ABI, ensureSignedIn, sendTx, wallet } from "../wallet";

export type Progress = {
  stage?: string; epoch?: number; epochs?: number; step?: number; steps?: number; loss?: number | null;
  examples_per_second?: number | null; eta_seconds?: number | null;
};

export type Job = {
  job_id: string; owner: string; name: string; datanet_ids: number[]; settings: Record<string, any>; base_model: string;
  server: string; price_per_call: number | string; state: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  contribution_ids: number[] | null; progress: Progress; error: string | null; cancel_requested: boolean;
  created: number; updated: number;
  result: { manifest_cid?: string; adapter_cid?: string; lineage_root?: string; metrics?: Record<string, any>; registration?: Record<string, any> };
};

const BASE_MODELS: [string, string][] = [
  ["minilm", "all-MiniLM-L6-v2 (sentence encoder, classification)"],
  ["tiny-encoder", "tiny-encoder (config-built, for tests)"],
  ["tiny-llama", "tiny-llama (causal, text and prompt/completion)"],
];

const DEFAULT_LORA = { rank: 8, alpha: 16, dropout: 0, target_modules: "query, value", learning_rate: 0.001, epochs: 3, batch_size: 16, max_length: 64, seed: 0 };

function eta(s: number | null | undefined): string {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  const t = Math.max(0, Math.round(s));
  return t >= 60 ? `${Math.floor(t / 60)} min ${t % 60} s` : `${t} s`;
}

/** The loss curve as a small SVG line chart (x: step, y: loss). */
export function LossChart({ points, unit = "step" }: { points: [number, number][]; unit?: string }) {
  const W = 320, H = 120, P = 28;
  if (points.length < 1) return <p class="muted" data-testid="loss-chart-empty">The loss curve appears with the first training step.</p>;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const sx = (x: number) => P + ((x - x0) / (x1 - x0)) * (W - P - 6);
  const sy = (y: number) => 6 + (1 - (y - y0) / (y1 - y0)) * (H - P - 6);
  const d = points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
  const last = points[points.length - 1];
  return (
    <figure class="loss">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`training loss over ${points.length} steps, last ${last[1].toFixed(4)}`} data-testid="loss-chart">
        <line x1={P} y1={H - P} x2={W - 4} y2={H - P} class="axis" />
        <line x1={P} y1={4} x2={P} y2={H - P} class="axis" />
        <text x={P - 3} y={10} text-anchor="end" class="tick">{y1.toFixed(2)}</text>
        <text x={P - 3} y={H - P} text-anchor="end" class="tick">{y0.toFixed(2)}</text>
        <text x={P} y={H - 12} class="tick">{unit} {x0}</text>
        <text x={W - 4} y={H - 12} text-anchor="end" class="tick">{unit} {x1}</text>
        <path d={d} class="curve" fill="none" data-points={points.length} />
        {points.length === 1 && <circle cx={sx(last[0])} cy={sy(last[1])} r={2.5} class="dot" />}
      </svg>
      <figcaption class="muted">loss {last[1].toFixed(4)} at {unit} {last[0]}{unit === "epoch" ? " (per-epoch mean: the steps were not watched live)" : ""}</figcaption>
    </figure>
  );
}

/** registerModel's ModelSpec from the job result (bytes32 as 0x-hex, pricePerCall as a decimal string). */
export function modelSpec(r: Record<string, any>) {
  return {
    name: String(r.name), baseModel: String(r.baseModel),
    datanetIds: (r.datanetIds as any[]).map((x) => BigInt(x)), contributionIds: (r.contributionIds as any[]).map((x) => BigInt(x)),
    lineageRoot: r.lineageRoot as `0x${string}`, configHash: r.configHash as `0x${string}`, adapterCid: String(r.adapterCid),
    adapterHash: r.adapterHash as `0x${string}`, manifestCid: String(r.manifestCid), parentId: BigInt(r.parentId ?? 0),
    pricePerCall: BigInt(r.pricePerCall), server: r.server as `0x${string}`,
  };
}

function JobView({ jobId }: { jobId: string }) {
  const w = useStore(wallet);
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState<string | null>(null);
  const losses = useRef(new Map<number, number>());
  const [registered, setRegistered] = useState<number | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [failure, setFailure] = useState<string | null>(null);

  useEffect(() => {
    losses.current = new Map();
    setJob(null);
    setRegistered(null);
    let live = true;
    let timer: number | undefined;
    const poll = async () => {
      try {
        const j = await request<Job>(`/v1/jobs/${encodeURIComponent(jobId)}`);
        if (!live) return;
        const p = j.progress ?? {};
        if (p.stage === "train" && typeof p.loss === "number" && typeof p.step === "number") {
          // step counts within an epoch: the curve's x is the step over the whole training
          losses.current.set(((p.epoch ?? 1) - 1) * (p.steps ?? 0) + p.step, p.loss);
        }
        setJob(j);
        setError(null);
        if (j.state === "queued" || j.state === "running") timer = window.setTimeout(poll, 500);
      } catch (e: any) {
        if (!live) return;
        setError(e?.message ?? String(e));
        timer = window.setTimeout(poll, 2000);
      }
    };
    poll();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [jobId]);

  // Already registered? (the index knows a model with this adapter)
  useEffect(() => {
    const hash = job?.result?.registration?.adapterHash;
    if (job?.state !== "succeeded" || !hash || registered !== null) return;
    index.models().then(
      (page) => {
        const m = page.items.find((x) => x.adapter_hash?.toLowerCase() === String(hash).toLowerCase());
        if (m) setRegistered(m.model_id);
      },
      () => undefined,
    );
  }, [job?.state]);

  if (error && !job) return <ErrorBox error={error} />;
  if (!job) return <Loading what="the job" />;
  const p = job.progress ?? {};
  let points = [...losses.current.entries()].sort((a, b) => a[0] - b[0]);
  const epochLosses = job.result?.metrics?.train_loss;
  let unit = "step";
  if (points.length < 2 && Array.isArray(epochLosses) && epochLosses.length) {
    // A short job can finish between two polls: draw its per-epoch losses instead (x = epoch).
    points = epochLosses.map((l: number, i: number) => [i + 1, l] as [number, number]);
    unit = "epoch";
  }
  const active = job.state === "queued" || job.state === "running";
  const mine = !!w.account && w.account.toLowerCase() === job.owner.toLowerCase();
  const total = (p.steps ?? 0) * (p.epochs ?? 0);
  const frac = job.state === "succeeded" ? 1 : total ? Math.min(1, (((p.epoch ?? 1) - 1) * (p.steps ?? 0) + (p.step ?? 0)) / total) : 0;

  const cancel = async () => {
    setBusy("cancel");
    setFailure(null);
    try {
      await ensureSignedIn();
      const j = await request<Job>(`/v1/jobs/${encodeURIComponent(job.job_id)}/cancel`, { method: "POST", auth: true });
      setJob(j);
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setBusy(null);
    }
  };

  const register = async () => {
    setBusy("register");
    setFailure(null);
    try {
      const cfg = await getConfig();
      const receipt = await sendTx(`Register model ${job.name}`, {
        address: cfg.contracts.models, abi: ABI.models, functionName: "registerModel", args: [modelSpec(job.result.registration!)],
      });
      for (const log of receipt.logs) {
        try {
          const ev = decodeEventLog({ abi: ABI.models, data: log.data, topics: log.topics }) as any;
          if (ev.eventName === "ModelRegistered") setRegistered(Number(ev.args.modelId));
        } catch {
          /* another contract's event */
        }
      }
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setBusy(null);
    }
  };

  return (
    <section class="card" aria-labelledby="job-title" data-testid="job" data-state={job.state}>
      <h2 id="job-title">
        Job {job.name} <Status s={job.state} />
      </h2>
      <p class="muted">
        <code>{job.job_id}</code> · base {job.base_model} · Datanets {job.datanet_ids.map((d) => `#${d}`).join(", ")}
        {job.contribution_ids ? ` · ${job.contribution_ids.length} approved contributions` : ""} · price {formatUnits(BigInt(job.price_per_call ?? 0), 18)} PVN per call
      </p>
      {(active || p.step !== undefined) && (
        <div class="progress" data-testid="job-progress">
          <progress max={1} value={frac} aria-label="training progress" />
          <dl class="facts">
            <div><dt>stage</dt><dd data-testid="job-stage">{p.stage ?? (job.state === "queued" ? "queued" : "—")}</dd></div>
            <div><dt>epoch</dt><dd data-testid="job-epoch">{p.epoch ?? "—"} / {p.epochs ?? job.settings?.epochs ?? "—"}</dd></div>
            <div><dt>step</dt><dd data-testid="job-step">{p.step ?? "—"} / {p.steps ?? "—"}</dd></div>
            <div><dt>loss</dt><dd>{typeof p.loss === "number" ? p.loss.toFixed(4) : "—"}</dd></div>
            <div><dt>examples/s</dt><dd data-testid="job-speed">{typeof p.examples_per_second === "number" ? p.examples_per_second.toFixed(1) : "—"}</dd></div>
            <div><dt>ETA</dt><dd data-testid="job-eta">{active ? eta(p.eta_seconds) : "—"}</dd></div>
          </dl>
        </div>
      )}
      <LossChart points={points} unit={unit} />
      {active && mine && (
        <button class="danger" data-testid="cancel-job" onClick={cancel} disabled={!!busy || job.cancel_requested}>
          {job.cancel_requested ? "Cancelling…" : "Cancel training"}
        </button>
      )}
      {job.state === "failed" && <ErrorBox error={`Training failed: ${job.error ?? "no reason given"}`} />}
      {job.state === "cancelled" && <p class="notice">This job was cancelled{job.error ? `: ${job.error}` : ""}.</p>}
      {job.state === "succeeded" && (
        <div data-testid="job-result">
          <h3>Result</h3>
          <dl class="facts">
            {Object.entries(job.result.metrics ?? {})
              .map(([k, v]) => [k, Array.isArray(v) && typeof v[v.length - 1] === "number" ? v[v.length - 1] : v] as [string, any])
              .filter(([, v]) => typeof v === "number" || typeof v === "string")
              .slice(0, 8)
              .map(([k, v]) => (
                <div key={k}><dt>{k.replace(/_/g, " ")}</dt><dd>{typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(4)) : v}</dd></div>
              ))}
            <div><dt>lineage root</dt><dd><Hash h={job.result.lineage_root} /></dd></div>
            <div><dt>adapter</dt><dd><Hash h={job.result.adapter_cid} /></dd></div>
            <div><dt>manifest</dt><dd><Hash h={job.result.manifest_cid} /></dd></div>
          </dl>
          {registered !== null ? (
            <p class="ok" aria-live="polite" data-testid="model-registered">
              Registered on chain as <a href={`#/models/${registered}`}>model #{registered}</a>.
            </p>
          ) : job.result.registration ? (
            <NeedsWallet action="register the model">
              {mine ? (
                <button class="primary" data-testid="register-model" onClick={register} disabled={!!busy}>
                  Register model
                </button>
              ) : (
                <p class="notice">Only the account that launched this job ({job.owner}) registers it.</p>
              )}
            </NeedsWallet>
          ) : null}
        </div>
      )}
      <ErrorBox error={failure} />
    </section>
  );
}

type Choice = { id: number; name: string; approved: number; task: string };

async function loadChoices(): Promise<Choice[]> {
  const page = await index.datanets();
  return Promise.all(
    page.items.map(async (d) => {
      const [meta, approved] = await Promise.all([
        datanetMetadata(d),
        index.contributions(`datanet_id=${d.datanet_id}&status=approved`).then((p) => p.total, () => 0),
      ]);
      return { id: d.datanet_id, name: datanetName(d, meta), approved, task: meta?.task ?? "" };
    }),
  );
}

function LaunchForm() {
  const w = useStore(wallet);
  const [choices, loadError] = useAsync(loadChoices, []);
  const [name, setName] = useState("");
  const [picked, setPicked] = useState<Set<number>>(new Set());
  const [base, setBase] = useState("minilm");
  const [lora, setLora] = useState<Record<string, any>>(DEFAULT_LORA);
  const [price, setPrice] = useState("0.001");
  const [server, setServer] = useState("");
  const [failure, setFailure] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const num = (k: string, label: string, attrs: Record<string, any> = {}) => (
    <label key={k}>
      <span>{label}</span>
      <input type="number" data-testid={`lora-${k}`} value={lora[k]} onInput={(e) => setLora({ ...lora, [k]: (e.target as HTMLInputElement).value })} {...attrs} />
    </label>
  );

  const launch = async () => {
    setFailure(null);
    setBusy(true);
    try {
      if (!/^[\w.\-/]{1,100}$/.test(name.trim())) throw new Error("the model name: 1 to 100 letters, digits, _ . - or /");
      if (!picked.size) throw new Error("choose at least one Datanet");
      const body = {
        name: name.trim(),
        datanet_ids: [...picked].sort((a, b) => a - b),
        base_model: base,
        lora: {
          rank: Number(lora.rank), alpha: Number(lora.alpha), dropout: Number(lora.dropout), learning_rate: Number(lora.learning_rate),
          epochs: Number(lora.epochs), batch_size: Number(lora.batch_size), max_length: Number(lora.max_length), seed: Number(lora.seed),
          target_modules: String(lora.target_modules).split(",").map((s) => s.trim()).filter(Boolean),
        },
        price_per_call: parseUnits(price || "0", 18).toString(),
        ...(server.trim() ? { server: server.trim() } : {}),
      };
      await ensureSignedIn();
      const job = await request<Job>("/v1/jobs", { method: "POST", auth: true, body: JSON.stringify(body).replace(/"price_per_call":"(\d+)"/, '"price_per_call":$1') });
      location.hash = `#/factory/${job.job_id}`;
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form
      class="card"
      aria-labelledby="launch-title"
      onSubmit={(e) => {
        e.preventDefault();
        launch();
      }}
    >
      <h2 id="launch-title">Launch a training</h2>
      <ErrorBox error={loadError} />
      <label>
        <span>Model name</span>
        <input data-testid="job-name" value={name} placeholder="support-router" onInput={(e) => setName((e.target as HTMLInputElement).value)} required />
      </label>
      <fieldset>
        <legend>Datanets (approved contributions only)</legend>
        {!choices && !loadError && <Loading what="Datanets" />}
        {choices && !choices.length && <p class="muted">No Datanets yet.</p>}
        {choices?.map((c) => (
          <label class="inline check" key={c.id}>
            <input
              type="checkbox"
              data-testid={`job-datanet-${c.id}`}
              checked={picked.has(c.id)}
              onChange={() =>
                setPicked((p) => {
                  const n = new Set(p);
                  n.has(c.id) ? n.delete(c.id) : n.add(c.id);
                  return n;
                })
              }
            />
            <span>
              #{c.id} {c.name} <span class="muted">· {c.task || "task unknown"} · {c.approved} approved</span>
            </span>
          </label>
        ))}
      </fieldset>
      <label>
        <span>Base model</span>
        <select data-testid="base-model" value={base} onChange={(e) => setBase((e.target as HTMLSelectElement).value)}>
          {BASE_MODELS.map(([v, l]) => (
            <option key={v} value={v}>
              {l}
            </option>
          ))}
        </select>
      </label>
      <fieldset>
        <legend>LoRA settings</legend>
        <div class="fields">
          {num("rank", "rank", { min: 1, max: 256 })}
          {num("alpha", "alpha", { min: 1, max: 1024 })}
          {num("dropout", "dropout", { min: 0, max: 0.99, step: 0.01 })}
          {num("learning_rate", "learning rate", { min: 0, max: 1, step: "any" })}
          {num("epochs", "epochs", { min: 1, max: 100 })}
          {num("batch_size", "batch size", { min: 1, max: 1024 })}
          {num("max_length", "max length (tokens)", { min: 2, max: 4096 })}
          {num("seed", "seed", { min: 0 })}
          <label>
            <span>target modules</span>
            <input data-testid="lora-target_modules" value={lora.target_modules} onInput={(e) => setLora({ ...lora, target_modules: (e.target as HTMLInputElement).value })} />
          </label>
        </div>
      </fieldset>
      <div class="fields">
        <label>
          <span>Price per call (PVN)</span>
          <input data-testid="job-price" inputMode="decimal" value={price} onInput={(e) => setPrice((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          <span>Serving key (address; default your account)</span>
          <input data-testid="job-server" value={server} placeholder={w.account ?? "0x…"} onInput={(e) => setServer((e.target as HTMLInputElement).value)} />
        </label>
      </div>
      <NeedsWallet action="launch a training (Sign-In with Ethereum)">
        <button class="primary" type="submit" data-testid="launch-job" disabled={busy}>
          {busy ? "Launching…" : "Launch training"}
        </button>
      </NeedsWallet>
      <ErrorBox error={failure} />
    </form>
  );
}

function JobsList() {
  const [jobs, error] = useAsync(() => request<Job[]>("/v1/jobs"), []);
  if (error) return <ErrorBox error={error} />;
  if (!jobs) return <Loading what="jobs" />;
  return (
    <Table
      caption="training jobs"
      head={["job", "owner", "base", "Datanets", "state"]}
      empty="No training jobs yet."
      rows={[...jobs].reverse().map((j) => [
        <a href={`#/factory/${j.job_id}`}>{j.name}</a>,
        <code title={j.owner}>{j.owner.slice(0, 8)}…</code>,
        j.base_model,
        j.datanet_ids.map((d) => `#${d}`).join(", "),
        <Status s={j.state} />,
      ])}
    />
  );
}

export function FactoryPage({ jobId }: { jobId?: string }) {
  const [available] = useAsync(() => hasRoute("/v1/jobs"), []);
  return (
    <section>
      <h1>Model Factory</h1>
      <p class="lead">Fine-tune a LoRA adapter on approved Datanet rows, watch it train, then register it on chain from your wallet with its lineage.</p>
      {available === false ? (
        <p class="notice" data-testid="factory-missing">
          This server has no training-jobs API (<code>/v1/jobs</code>). Train from the command line: <code>provenant train my-model --datanets 1</code>.
        </p>
      ) : available === undefined ? (
        <Loading />
      ) : (
        <>
          {jobId ? (
            <>
              <p>
                <a href="#/factory">← all jobs and a new training</a>
              </p>
              <JobView jobId={jobId} />
            </>
          ) : (
            <div class="grid">
              <LaunchForm />
              <section class="card" aria-labelledby="jobs-title">
                <h2 id="jobs-title">Jobs</h2>
                <JobsList />
              </section>
            </div>
          )}
        </>
      )}
    </section>
  );
}
