/**
 * The Model Factory's launch form: Datanets, base model (a packaged one or a typed Hugging Face id),
 * selection filters (factory-filters.tsx) and LoRA settings, sent as POST /v1/jobs.
 */
import { useState } from "preact/hooks";
import { parseUnits } from "viem";
import { ApiError, datanetMetadata, datanetName, index, request } from "../api";
import { useAsync, useStore } from "../store";
import { ErrorBox, Loading, NeedsWallet } from "../ui";
import { ensureSignedIn, wallet } from "../wallet";
import type { Job } from "./factory";
import { EMPTY_FILTERS, FiltersFields, filtersBody, type FilterForm } from "./factory-filters";

const BASE_MODELS: [string, string][] = [
  ["minilm", "all-MiniLM-L6-v2 (sentence encoder, classification)"],
  ["tiny-encoder", "tiny-encoder (config-built, for tests)"],
  ["tiny-llama", "tiny-llama (causal, text and prompt/completion)"],
  ["hf", "a Hugging Face id or local folder…"],
];
/** A Hugging Face id ("org/name") or a local folder; the server loads it from its local cache only. */
const HF_ID = /^[\w.\-/~]{1,200}$/;

// target_modules stays empty: the server then uses the base model's usual modules ("query, value"
// would fail on a Llama base, whose attention projections are q_proj/v_proj).
const DEFAULT_LORA = { rank: 8, alpha: 16, dropout: 0, target_modules: "", learning_rate: 0.001, epochs: 3, batch_size: 16, max_length: 64, seed: 0 };

export type Choice = { id: number; name: string; approved: number; task: string };

export async function loadChoices(): Promise<Choice[]> {
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

export function LaunchForm() {
  const w = useStore(wallet);
  const [choices, loadError] = useAsync(loadChoices, []);
  const [name, setName] = useState("");
  const [picked, setPicked] = useState<Set<number>>(new Set());
  const [base, setBase] = useState("minilm");
  const [hfId, setHfId] = useState("");
  const [lora, setLora] = useState<Record<string, any>>(DEFAULT_LORA);
  const [filters, setFilters] = useState<FilterForm>(EMPTY_FILTERS);
  const [problems, setProblems] = useState<string[]>([]);
  const [serverError, setServerError] = useState<string | null>(null);
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

  const pickedIds = [...picked].sort((a, b) => a - b);
  const launch = async () => {
    setFailure(null);
    setServerError(null);
    setBusy(true);
    try {
      if (!/^[\w.\-/]{1,100}$/.test(name.trim())) throw new Error("the model name: 1 to 100 letters, digits, _ . - or /");
      if (!picked.size) throw new Error("choose at least one Datanet");
      const baseModel = base === "hf" ? hfId.trim() : base;
      if (!HF_ID.test(baseModel)) throw new Error("the base model: a Hugging Face id such as org/name, or a local folder (1 to 200 characters, no spaces)");
      const checked = filtersBody(filters, pickedIds);
      setProblems(checked.problems);
      if (!checked.body) throw new Error("fix the selection filters first (listed above)");
      // Empty: the server picks the base model's usual modules; sent only when the user typed some.
      const modules = String(lora.target_modules).split(",").map((s) => s.trim()).filter(Boolean);
      const body = {
        name: name.trim(),
        datanet_ids: pickedIds,
        base_model: baseModel,
        lora: {
          rank: Number(lora.rank), alpha: Number(lora.alpha), dropout: Number(lora.dropout), learning_rate: Number(lora.learning_rate),
          epochs: Number(lora.epochs), batch_size: Number(lora.batch_size), max_length: Number(lora.max_length), seed: Number(lora.seed),
          target_modules: modules.length ? modules : null,
        },
        filters: checked.body,
        price_per_call: parseUnits(price || "0", 18).toString(),
        ...(server.trim() ? { server: server.trim() } : {}),
      };
      await ensureSignedIn();
      const job = await request<Job>("/v1/jobs", { method: "POST", auth: true, body: JSON.stringify(body).replace(/"price_per_call":"(\d+)"/, '"price_per_call":$1') });
      location.hash = `#/factory/${job.job_id}`;
    } catch (e: any) {
      // The server's refusal of the settings (422) goes next to the filters it most often concerns.
      if (e instanceof ApiError && e.status === 422) setServerError(e.message);
      else setFailure(e?.message ?? String(e));
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
      {base === "hf" && (
        <label>
          <span>Hugging Face id or local folder (must already be in the server's cache: nothing is downloaded)</span>
          <input data-testid="base-model-id" value={hfId} placeholder="HuggingFaceTB/SmolLM2-135M" onInput={(e) => setHfId((e.target as HTMLInputElement).value)} />
        </label>
      )}
      <FiltersFields
        value={filters}
        onChange={(f) => {
          setFilters(f);
          setProblems([]);
        }}
        datanets={pickedIds.map((id) => ({ id, name: choices?.find((c) => c.id === id)?.name ?? "" }))}
        problems={problems}
        serverError={serverError}
      />
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
            <span>target modules (empty: the base's usual)</span>
            <input data-testid="lora-target_modules" value={lora.target_modules} placeholder="default" onInput={(e) => setLora({ ...lora, target_modules: (e.target as HTMLInputElement).value })} />
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

