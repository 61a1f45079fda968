/**
 * Pieces of the Model Factory's job view: live progress (step within the epoch, epoch, loss,
 * examples/s, ETA), the points of the loss history (drawn by factory.tsx's LossChart), and the held-out metrics per
 * Datanet once the job has finished (GET /v1/jobs/{id}: `progress` while running, `result.per_datanet`
 * and `result.task` after; backend factory/jobs.py).
 *
 * The job API keeps only the latest progress point, so the history is what this page saw while
 * polling (plus each finished epoch's mean loss); a `progress_history` list, if the server sends
 * one, is used instead (see `lossHistory`).
 */
import type { Progress } from "./factory";

/** Per Datanet (id as a string): the selection's counts, then the held-out metrics. */
export type DatanetMetrics = {
  contributions?: number; train_rows?: number; held_out_rows?: number; repeated_rows?: number;
  eval_loss?: number; eval_accuracy?: number; eval_perplexity?: number; eval_examples?: number;
};

export function eta(s: number | null | undefined): string {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  const t = Math.max(0, Math.round(s));
  return t >= 60 ? `${Math.floor(t / 60)} min ${t % 60} s` : `${t} s`;
}

/** The global step of a training progress point (steps count within the epoch). */
export function globalStep(p: Progress): number | null {
  if (typeof p.step !== "number" || typeof p.steps !== "number") return null;
  return ((p.epoch ?? 1) - 1) * p.steps + p.step;
}

/**
 * Loss points [global step, loss] from a server-kept history when present, else from what the page
 * recorded; a short job that finished between two polls falls back to the per-epoch means.
 */
export function lossHistory(seen: Map<number, number>, serverHistory: unknown, epochLosses: unknown, stepsPerEpoch: number | undefined): { points: [number, number][]; unit: string } {
  if (Array.isArray(serverHistory)) {
    // Keyed by global step: a job resumed after a crash re-runs its last epoch, and the rerun wins.
    const byStep = new Map<number, number>();
    for (const p of serverHistory as Progress[]) {
      const at = globalStep(p);
      if (at !== null && typeof p.loss === "number") byStep.set(at, p.loss);
    }
    if (byStep.size >= 2) return { points: [...byStep.entries()].sort((a, b) => a[0] - b[0]), unit: "step" };
  }
  const points = [...seen.entries()].sort((a, b) => a[0] - b[0]);
  if (points.length < 2 && Array.isArray(epochLosses) && epochLosses.length) {
    const per = stepsPerEpoch ?? 0;
    return per
      ? { points: epochLosses.map((l: number, i: number) => [(i + 1) * per, l] as [number, number]), unit: "step" }
      : { points: epochLosses.map((l: number, i: number) => [i + 1, l] as [number, number]), unit: "epoch" };
  }
  return { points, unit: "step" };
}

/** Live progress: step within the epoch, epoch, loss, speed and ETA, with a bar over all steps. */
export function ProgressFacts({ p, active, epochsSetting, succeeded }: { p: Progress; active: boolean; epochsSetting?: number; succeeded: boolean }) {
  const total = (p.steps ?? 0) * (p.epochs ?? 0);
  const done = globalStep(p);
  const frac = succeeded ? 1 : total && done !== null ? Math.min(1, done / total) : 0;
  return (
    <div class="progress" data-testid="job-progress">
      <progress max={1} value={frac} aria-label="training progress" />
      <dl class="facts">
        <div><dt>stage</dt><dd data-testid="job-stage">{p.stage ?? (active ? "queued" : "—")}</dd></div>
        <div><dt>epoch</dt><dd data-testid="job-epoch">{p.epoch ?? "—"} / {p.epochs ?? epochsSetting ?? "—"}</dd></div>
        <div><dt>step in epoch</dt><dd data-testid="job-step">{p.step ?? "—"} / {p.steps ?? "—"}</dd></div>
        <div><dt>all steps</dt><dd data-testid="job-total-steps">{done ?? "—"} / {total || "—"}</dd></div>
        <div><dt>loss</dt><dd data-testid="job-loss">{typeof p.loss === "number" ? p.loss.toFixed(4) : "—"}</dd></div>
        <div><dt>examples/s</dt><dd data-testid="job-speed">{typeof p.examples_per_second === "number" ? p.examples_per_second.toFixed(1) : "—"}</dd></div>
        <div><dt>ETA</dt><dd data-testid="job-eta">{active ? eta(p.eta_seconds) : "—"}</dd></div>
      </dl>
    </div>
  );
}

const fmt = (v: unknown, digits = 4) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : "—");

/** The held-out metrics of a finished job, one row per Datanet. */
export function PerDatanetTable({ perDatanet, task, names }: { perDatanet: Record<string, DatanetMetrics>; task?: string; names: Record<number, string> }) {
  const ids = Object.keys(perDatanet).sort((a, b) => Number(a) - Number(b));
  if (!ids.length) return <p class="muted">No per-Datanet metrics were recorded for this job.</p>;
  const classifier = task === "classification" || ids.some((d) => typeof perDatanet[d].eval_accuracy === "number");
  return (
    <div class="scroll">
      <table data-testid="per-datanet">
        <caption class="sr-only">held-out metrics per Datanet</caption>
        <thead>
          <tr>
            <th scope="col">Datanet</th>
            <th scope="col">contributions</th>
            <th scope="col">rows used</th>
            <th scope="col">held-out rows</th>
            <th scope="col" title="rows that repeat an earlier contribution's row: each distinct row trains once">repeats dropped</th>
            <th scope="col">held-out loss</th>
            <th scope="col">{classifier ? "accuracy" : "perplexity"}</th>
          </tr>
        </thead>
        <tbody>
          {ids.map((d) => {
            const m = perDatanet[d];
            return (
              <tr key={d} data-testid={`per-datanet-${d}`} data-train-rows={m.train_rows ?? ""} data-held-out-rows={m.held_out_rows ?? ""}>
                <td>#{d}{names[Number(d)] ? ` ${names[Number(d)]}` : ""}</td>
                <td>{fmt(m.contributions)}</td>
                <td>{fmt(m.train_rows)}</td>
                <td>{fmt(m.held_out_rows)}</td>
                <td>{fmt(m.repeated_rows)}</td>
                <td>{m.held_out_rows ? fmt(m.eval_loss) : "no held-out rows"}</td>
                <td>{classifier ? (typeof m.eval_accuracy === "number" ? `${(m.eval_accuracy * 100).toFixed(1)} %` : "—") : fmt(m.eval_perplexity, 2)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
