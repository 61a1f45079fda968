import { useEffect, useState } from "preact/hooks";
import { parseSignature, parseUnits } from "viem";
import { ApiError, getConfig, hasRoute, index, request } from "../api";
import { PERMIT_TYPES, VOUCHER_TYPES, formatUnits18, parseRaw, plain, verifyReceipt, type Check } from "../lib";
import { useAsync, useStore } from "../store";
import { Addr, Card, ErrorBox, Hash, Loading, NeedsWallet, Table } from "../ui";
import { ABI, clients, sendTx, wallet } from "../wallet";

type ServedModel = { id: string; model_id?: number; task?: string; price_per_call?: string; served_here?: boolean; root?: string };

async function loadModels(): Promise<ServedModel[] | null> {
  if (!(await hasRoute("/v1/models"))) return null;
  const r = await request<{ data: ServedModel[] }>("/v1/models");
  return r.data.filter((m) => m.model_id !== undefined);
}

const VOUCHER_KEY = (model: number, consumer: string) => `provenant.voucher.${model}.${consumer.toLowerCase()}`;

export function PlaygroundPage({ preselect }: { preselect?: string }) {
  const w = useStore(wallet);
  const [models, error] = useAsync(loadModels, []);
  const [name, setName] = useState<string>(preselect ? decodeURIComponent(preselect) : "");
  useEffect(() => {
    if (!name && models?.length) setName((models.find((m) => m.served_here) ?? models[0]).id);
  }, [models]);
  const model = models?.find((m) => m.id === name) ?? null;
  const [funds, , reloadFunds] = useAsync(async () => {
    if (!model?.model_id || !w.account || !w.selected) return null;
    const cfg = await getConfig();
    const { pc } = await clients();
    const [deposit, spent, balance] = await Promise.all([
      pc.readContract({ address: cfg.contracts.escrow, abi: ABI.escrow, functionName: "depositOf", args: [w.account, BigInt(model.model_id)] }),
      pc.readContract({ address: cfg.contracts.escrow, abi: ABI.escrow, functionName: "spentOf", args: [w.account, BigInt(model.model_id)] }),
      pc.readContract({ address: cfg.contracts.token, abi: ABI.token, functionName: "balanceOf", args: [w.account] }),
    ]);
    return { deposit: deposit as bigint, spent: spent as bigint, balance: balance as bigint };
  }, [model?.model_id, w.account, w.chainId]);
  const [input, setInput] = useState("");
  const [amount, setAmount] = useState("10");
  const [busy, setBusy] = useState<string | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [answer, setAnswer] = useState<any>(null);
  const [checks, setChecks] = useState<Check[] | null>(null);

  const deposit = async () => {
    if (!model?.model_id) return;
    setFailure(null);
    setBusy("Sign the permit in your wallet…");
    try {
      const cfg = await getConfig();
      const { wc, pc, account } = await clients();
      const value = parseUnits(amount || "0", 18);
      const nonce = (await pc.readContract({ address: cfg.contracts.token, abi: ABI.token, functionName: "nonces", args: [account] })) as bigint;
      const block = await pc.getBlock();
      const deadline = block.timestamp + 3600n;
      const sig = await wc.signTypedData({
        account,
        domain: { name: "Provenant", version: "1", chainId: cfg.chain_id, verifyingContract: cfg.contracts.token },
        types: PERMIT_TYPES,
        primaryType: "Permit",
        message: { owner: account, spender: cfg.contracts.escrow, value, nonce, deadline },
      });
      const { v, r, s, yParity } = parseSignature(sig);
      setBusy("Depositing…");
      await sendTx(`Deposit ${amount} PVN for ${model.id}`, {
        address: cfg.contracts.escrow,
        abi: ABI.escrow,
        functionName: "depositWithPermit",
        args: [BigInt(model.model_id), value, deadline, Number(v ?? BigInt(27 + yParity)), r, s],
      });
      reloadFunds();
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setBusy(null);
    }
  };

  const call = async () => {
    if (!model?.model_id || !input.trim()) return;
    setFailure(null);
    setAnswer(null);
    setChecks(null);
    try {
      const cfg = await getConfig();
      const { wc, pc, account } = await clients();
      const price = BigInt(model.price_per_call ?? "0");
      const spent = (await pc.readContract({ address: cfg.contracts.escrow, abi: ABI.escrow, functionName: "spentOf", args: [account, BigInt(model.model_id)] })) as bigint;
      const stored = BigInt(localStorage.getItem(VOUCHER_KEY(model.model_id, account)) ?? "0");
      let previous = stored > spent ? stored : spent;
      const block = await pc.getBlock();
      const send = async (prev: bigint) => {
        const voucher = { consumer: account, modelId: BigInt(model.model_id!), cumulativeAmount: prev + price, deadline: block.timestamp + 3600n };
        setBusy("Sign the voucher in your wallet…");
        const signature = await wc.signTypedData({
          account,
          domain: { name: "Provenant UsageEscrow", version: "1", chainId: cfg.chain_id, verifyingContract: cfg.contracts.escrow },
          types: VOUCHER_TYPES,
          primaryType: "Voucher",
          message: voucher,
        });
        setBusy("Calling the model…");
        const text = await request<string>("/v1/classifications", {
          method: "POST",
          raw: true,
          body: JSON.stringify({
            model: model.id,
            input,
            payment: {
              voucher: { consumer: account, model_id: model.model_id, cumulative_amount: voucher.cumulativeAmount.toString(), deadline: Number(voucher.deadline) },
              signature,
            },
          }),
        });
        localStorage.setItem(VOUCHER_KEY(model.model_id!, account), voucher.cumulativeAmount.toString());
        return text;
      };
      let text: string;
      try {
        text = await send(previous);
      } catch (e) {
        // The server holds a newer voucher than this browser knows (another tab, another device).
        const m = e instanceof ApiError && e.status === 402 ? /from (\d+) by/.exec(e.message) : null;
        if (!m) throw e;
        previous = BigInt(m[1]);
        text = await send(previous);
      }
      const raw = parseRaw(text);
      const body = plain(raw);
      setAnswer(body);
      setBusy("Verifying the receipt…");
      const onChain = await index.model(model.model_id).catch(() => null);
      setChecks(
        await verifyReceipt(raw.provenance, {
          server: onChain?.server,
          lineageRoot: onChain?.lineage_root,
          adapterHash: onChain?.adapter_hash,
          prompt: input,
          output: body.label,
        }),
      );
      reloadFunds();
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setBusy(null);
    }
  };

  const receipt = answer?.provenance;
  return (
    <section>
      <h1>Playground</h1>
      <p class="lead">Call a model, pay with a voucher your wallet signs, and check the answer's signed receipt right here.</p>
      <ErrorBox error={error} />
      {models === null && <p class="notice">This server does not serve models (no /v1/models). Start it with serving enabled.</p>}
      {models === undefined && !error && <Loading what="models" />}
      {models && !models.length && <p class="muted">No registered model yet.</p>}
      {models && models.length > 0 && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            call();
          }}
        >
          <label>
            <span>Model</span>
            <select data-testid="model-select" value={name} onChange={(e) => setName((e.target as HTMLSelectElement).value)}>
              {models.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.id} · {formatUnits18(m.price_per_call)} PVN per call{m.served_here === false ? " (served elsewhere)" : ""}
                </option>
              ))}
            </select>
          </label>
          <NeedsWallet action="pay for calls">
            {funds && (
              <p class="muted" data-testid="funds">
                Deposit for this model: {formatUnits18(funds.deposit - funds.spent)} PVN unspent · wallet balance {formatUnits18(funds.balance)} PVN
              </p>
            )}
            <div class="row">
              <label class="inline">
                <span>Deposit (PVN)</span>
                <input type="number" min="0" step="any" value={amount} onInput={(e) => setAmount((e.target as HTMLInputElement).value)} data-testid="deposit-amount" />
              </label>
              <button type="button" data-testid="deposit" onClick={deposit} disabled={!!busy}>
                Deposit with permit
              </button>
            </div>
          </NeedsWallet>
          <label>
            <span>Input</span>
            <textarea rows={3} value={input} onInput={(e) => setInput((e.target as HTMLTextAreaElement).value)} data-testid="playground-input" placeholder="Text to classify" />
          </label>
          <NeedsWallet action="call the model">
            <button class="primary" type="submit" data-testid="call-model" disabled={!!busy || !input.trim()}>
              Sign voucher and call
            </button>
          </NeedsWallet>
          {busy && (
            <p role="status" class="muted">
              {busy}
            </p>
          )}
          <ErrorBox error={failure} />
        </form>
      )}
      {answer && (
        <div class="grid">
          <Card title="Answer" id="answer">
            <p class="answer" data-testid="answer-label">
              {answer.label}
            </p>
            <ul class="bars">
              {Object.entries(answer.probabilities ?? {}).map(([k, v]) => (
                <li key={k}>
                  <span class="bar-label">{k}</span>
                  <span class="bar" style={{ width: `${100 * Number(v)}%` }} />
                  <span class="bar-value">{(100 * Number(v)).toFixed(1)}%</span>
                </li>
              ))}
            </ul>
          </Card>
          <Card title="Receipt checks" id="checks">
            {!checks && <Loading />}
            {checks && (
              <ul class="checks" data-testid="receipt-checks">
                {checks.map((c) => (
                  <li key={c.what} class={c.ok ? "ok" : "bad"} data-ok={String(c.ok)}>
                    {c.ok ? "✔" : "✘"} {c.what}: {c.detail}
                  </li>
                ))}
              </ul>
            )}
            <p class="muted">
              Call <Hash h={receipt?.call_id} /> · fee {formatUnits18(receipt?.fee)} PVN · signer <Addr a={receipt?.signer} />
            </p>
          </Card>
          <Card title="Data ancestry of this answer" id="ancestry">
            {(["datanets", "contributions", "contributors"] as const).map((k) => (
              <div key={k}>
                <h3>{k}</h3>
                <Table
                  caption={k}
                  head={["id", "share"]}
                  empty="none"
                  rows={(receipt?.attribution?.[k] ?? []).map((r: any) => [
                    k === "datanets" ? <a href={`#/datanets/${r.id}`}>Datanet {r.id}</a> : k === "contributors" ? <Addr a={r.id} /> : `#${r.id}`,
                    `${(Number(r.share_ppm) / 10_000).toFixed(2)}%`,
                  ])}
                />
              </div>
            ))}
            <p>
              <a href={`#/models/${receipt?.model_id}`}>Model lineage</a>
            </p>
          </Card>
        </div>
      )}
    </section>
  );
}
