import { useEffect, useState } from "preact/hooks";
import { decodeEventLog } from "viem";
import { ApiError, datanetMetadata, datanetName, getConfig, index, request } from "../api";
import { describeFlag, rulesFrom, validateJsonl, type DupFlag, type LineError } from "../lib";
import { useAsync } from "../store";
import { ErrorBox, Loading, NeedsWallet } from "../ui";
import { ABI, clients, ensureSignedIn, sendTx } from "../wallet";

type Upload = { cid: string; content_hash: `0x${string}`; size: number; row_count: number; file: string; duplicates?: DupFlag[] };

async function loadChoices() {
  const page = await index.datanets();
  return Promise.all(page.items.map(async (d) => ({ d, meta: await datanetMetadata(d) })));
}

/** The server's duplicate flags for an uploaded file: for curators to weigh, never a refusal. */
export function DuplicateList({ flags, testid = "duplicate-flags" }: { flags: DupFlag[]; testid?: string }) {
  if (!flags.length)
    return (
      <p class="muted" data-testid={testid} data-count="0">
        No duplicate rows found in this Datanet.
      </p>
    );
  const exact = flags.filter((f) => f.kind === "exact").length;
  return (
    <div class="notice" data-testid={testid} data-count={flags.length}>
      <strong>
        {flags.length} duplicate row{flags.length > 1 ? "s" : ""} flagged ({exact} exact, {flags.length - exact} near)
      </strong>
      : curators see these flags; they may still approve.
      <ul>
        {flags.slice(0, 20).map((f) => (
          <li key={`${f.line}-${f.kind}`} data-kind={f.kind} data-line={f.line}>
            <span class="flag">{f.kind}</span> {describeFlag(f)}
          </li>
        ))}
        {flags.length > 20 && <li class="muted">and {flags.length - 20} more</li>}
      </ul>
    </div>
  );
}

export function ContributePage({ preselect }: { preselect?: number }) {
  const [choices, loadError] = useAsync(loadChoices, []);
  const [datanetId, setDatanetId] = useState<number | null>(preselect ?? null);
  const [file, setFile] = useState<File | null>(null);
  const [bytes, setBytes] = useState<Uint8Array | null>(null);
  const [errors, setErrors] = useState<LineError[]>([]);
  const [rows, setRows] = useState(0);
  const [dragging, setDragging] = useState(false);
  const [step, setStep] = useState<string | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [done, setDone] = useState<{ id: string; upload: Upload } | null>(null);

  useEffect(() => {
    if (datanetId === null && choices?.length) setDatanetId(choices[0].d.datanet_id);
  }, [choices]);
  const chosen = choices?.find((c) => c.d.datanet_id === datanetId) ?? null;
  const rules = rulesFrom(chosen?.meta ?? null);

  useEffect(() => {
    if (!bytes) return;
    const r = validateJsonl(bytes, rules);
    setErrors(r.errors);
    setRows(r.rows);
  }, [bytes, datanetId, choices]);

  const take = async (f: File | null | undefined) => {
    setDone(null);
    setFailure(null);
    if (!f) return;
    // Read first, then set the file, its bytes and their verdict together, so that no render
    // shows the new file's name beside the previous file's errors.
    const data = new Uint8Array(await f.arrayBuffer());
    const r = validateJsonl(data, rules);
    setFile(f);
    setBytes(data);
    setErrors(r.errors);
    setRows(r.rows);
  };

  const submit = async () => {
    if (!file || !bytes || datanetId === null || !chosen) return;
    setFailure(null);
    setDone(null);
    try {
      setStep("Signing in with Ethereum…");
      await ensureSignedIn();
      setStep("Uploading and validating on the server…");
      let up: Upload;
      try {
        up = await request<Upload>(`/v1/datanets/${datanetId}/uploads`, {
          method: "POST",
          auth: true,
          body: bytes,
          headers: { "Content-Type": "application/x-ndjson", "X-Filename": file.name },
        });
      } catch (e) {
        if (e instanceof ApiError && e.body?.detail?.errors) {
          setErrors(e.body.detail.errors);
          throw new Error(`the server refused the file: ${e.body.detail.message ?? e.message}`);
        }
        throw e;
      }
      const cfg = await getConfig();
      const stake = BigInt(chosen.d.stake ?? 0);
      if (stake > 0n) {
        const { pc, account } = await clients();
        const allowance = (await pc.readContract({ address: cfg.contracts.token, abi: ABI.token, functionName: "allowance", args: [account, cfg.contracts.datanets] })) as bigint;
        if (allowance < stake) {
          setStep("Approving the stake…");
          await sendTx("Approve stake", { address: cfg.contracts.token, abi: ABI.token, functionName: "approve", args: [cfg.contracts.datanets, stake] });
        }
      }
      setStep("Recording the contribution on chain (confirm in your wallet)…");
      const receipt = await sendTx(`Contribute ${up.file} to Datanet ${datanetId}`, {
        address: cfg.contracts.datanets,
        abi: ABI.datanets,
        functionName: "contribute",
        args: [BigInt(datanetId), up.content_hash, up.cid, BigInt(up.size), up.row_count],
      });
      let id = "?";
      for (const log of receipt.logs) {
        try {
          const ev = decodeEventLog({ abi: ABI.datanets, data: log.data, topics: log.topics }) as any;
          if (ev.eventName === "ContributionSubmitted") id = String(ev.args.contributionId);
        } catch {
          /* another contract's event */
        }
      }
      setDone({ id, upload: up });
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setStep(null);
    }
  };

  return (
    <section>
      <h1>Contribute</h1>
      <p class="lead">Pick a Datanet, drop a JSONL file, fix what the checks find, then record it on chain with your wallet.</p>
      <ErrorBox error={loadError} />
      {!choices && !loadError && <Loading what="Datanets" />}
      {choices && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            submit();
          }}
        >
          <label>
            <span>Datanet</span>
            <select
              data-testid="datanet-select"
              value={datanetId ?? ""}
              onChange={(e) => setDatanetId(Number((e.target as HTMLSelectElement).value))}
            >
              {choices.map(({ d, meta }) => (
                <option key={d.datanet_id} value={d.datanet_id}>
                  #{d.datanet_id} {datanetName(d, meta)}
                </option>
              ))}
            </select>
          </label>
          {rules ? (
            <p class="muted" data-testid="rules">
              {rules.task} rows{rules.labels.length ? ` labelled ${rules.labels.join(" / ")}` : ""}; at most {rules.max_rows} rows and {rules.max_bytes} bytes per file.
            </p>
          ) : (
            <p class="muted">This Datanet's rules are checked by the server on upload; the page checks that each line is a JSON object.</p>
          )}
          <label
            class={`drop ${dragging ? "over" : ""}`}
            data-testid="dropzone"
            onDragOver={(e) => {
              e.preventDefault();
              setDragging(true);
            }}
            onDragLeave={() => setDragging(false)}
            onDrop={(e) => {
              e.preventDefault();
              setDragging(false);
              take(e.dataTransfer?.files?.[0]);
            }}
          >
            <input type="file" accept=".jsonl,.ndjson,application/x-ndjson,text/plain" data-testid="file-input" onChange={(e) => take((e.target as HTMLInputElement).files?.[0])} />
            <span>{file ? `${file.name} · ${file.size} bytes · ${rows} rows` : "Drop a .jsonl file here, or choose one"}</span>
          </label>
          {file && errors.length > 0 && (
            <div class="errors" role="alert" data-testid="validation-errors">
              <h2>
                {errors.length} problem{errors.length > 1 ? "s" : ""} in {file.name}: nothing was uploaded or signed
              </h2>
              <ul>
                {errors.map((er, i) => (
                  <li key={i} data-line={er.line ?? ""}>
                    {er.line !== null && er.line !== undefined ? <strong>line {er.line}: </strong> : null}
                    {er.problem}
                  </li>
                ))}
              </ul>
            </div>
          )}
          {file && !errors.length && (
            <p class="ok" data-testid="validation-ok">
              {rows} rows look valid.
            </p>
          )}
          <NeedsWallet action="upload and sign">
            <button class="primary" type="submit" data-testid="submit-contribution" disabled={!file || errors.length > 0 || !!step}>
              Upload and contribute
            </button>
          </NeedsWallet>
          {step && (
            <p role="status" class="muted">
              {step}
            </p>
          )}
          <ErrorBox error={failure} />
          {done && (
            <div class="ok" role="status" data-testid="contribution-done">
              Contribution #{done.id} recorded: {done.upload.row_count} rows, CID <code>{done.upload.cid}</code>. It is pending until a curator approves it.{" "}
              <a href={`#/datanets/${datanetId}`}>Follow its status</a>.
            </div>
          )}
          {done && (
            <DuplicateList flags={done.upload.duplicates ?? []} />
          )}
        </form>
      )}
    </section>
  );
}
