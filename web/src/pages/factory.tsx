import { useEffect, useRef, useState } from "preact/hooks";
import { decodeEventLog, formatUnits } from "viem";
import { getConfig, hasRoute, index, request } from "../api";
import { useAsync, useStore } from "../store";
import { ErrorBox, Hash, Loading, NeedsWallet, Status, Table } from "../ui";
import { ABI, ensureSignedIn, sendTx, wallet } from "../wallet";
import { FiltersSummary } from "./factory-filters";
import { LaunchForm, loadChoices } from "./factory-launch";
import { type DatanetMetrics, PerDatanetTable, ProgressFacts, globalStep, lossHistory } from "./factory-job";

export type Progress = {
  stage?: string; epoch?: number; epochs?: number; step?: number; steps?: number; loss?: number | null;
  examples_per_second?: number | null; eta_seconds?: number | null; train_loss?: number;
  task?: string; per_datanet?: Record<string, DatanetMetrics>;
};

export type Job = {
  job_id: string; owner: string; name: string; datanet_ids: number[]; settings: Record<string, any>; base_model: string;
  server: string; price_per_call: number | string; state: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  contribution_ids: number[] | null; progress: Progress; error: string | null; cancel_requested: boolean;
  created: number; updated: number; filters?: Record<string, any>; progress_history?: Progress[];
  result: {
    manifest_cid?: string; adapter_cid?: string; lineage_root?: string; metrics?: Record<string, any>; registration?: Record<string, any>;
    task?: string; per_datanet?: Record<string, DatanetMetrics>;
  };
};

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
  const stepsPerEpoch = useRef<number | undefined>(undefined);
  const [names, setNames] = useState<Record<number, string>>({});
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
        const at = globalStep(p);
        if (p.stage === "train" && typeof p.loss === "number" && at !== null) {
          // step counts within an epoch: the curve's x is the step over the whole training
          if (typeof p.steps === "number") stepsPerEpoch.current = p.steps;
          losses.current.set(at, p.loss);
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

  // The Datanets' names for the metrics table (best effort: ids alone are shown until then).
  useEffect(() => {
    if (job?.state !== "succeeded") return;
    loadChoices().then(
      (cs) => setNames(Object.fromEntries(cs.map((c) => [c.id, c.name]))),
      () => undefined,
    );
  }, [job?.state]);

  if (error && !job) return <ErrorBox error={error} />;
  if (!job) return <Loading what="the job" />;
  const p = job.progress ?? {};
  // A short job can finish between two polls: then the per-epoch means are drawn.
  const { points, unit } = lossHistory(losses.current, job.progress_history, job.result?.metrics?.train_loss, stepsPerEpoch.current);
  const active = job.state === "queued" || job.state === "running";
  const mine = !!w.account && w.account.toLowerCase() === job.owner.toLowerCase();
  const task = job.result?.task ?? p.task;
  const perDatanet = job.result?.per_datanet ?? job.result?.metrics?.per_datanet;

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
      <p class="muted" data-testid="job-facts">
        <code>{job.job_id}</code> · base {job.base_model}{task ? ` · task ${task}` : ""} · Datanets {job.datanet_ids.map((d) => `#${d}`).join(", ")}
        {job.contribution_ids ? ` · ${job.contribution_ids.length} approved contributions` : ""} · price {formatUnits(BigInt(job.price_per_call ?? 0), 18)} PVN per call
      </p>
      {job.filters && Object.keys(job.filters).length > 0 && <FiltersSummary f={job.filters} />}
      {(active || p.step !== undefined) && (
        <ProgressFacts p={p} active={active} epochsSetting={job.settings?.epochs} succeeded={job.state === "succeeded"} />
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
          <h3>Held-out metrics per Datanet</h3>
          <PerDatanetTable perDatanet={perDatanet ?? {}} task={task} names={names} />
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
