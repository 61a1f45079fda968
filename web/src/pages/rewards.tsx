import { useState } from "preact/hooks";
import { getAddress, type Hex } from "viem";
import { getConfig, hasRoute, index, request, serverRoutes } from "../api";
import { formatUnits18, payoutLeaf, processProof } from "../lib";
import { useAsync, useStore } from "../store";
import { ErrorBox, Hash, Loading, NeedsWallet, Table } from "../ui";
import { ABI, clients, sendTx, wallet } from "../wallet";

type ClaimItem = { model_id: number; epoch: number; index: number; account: string; amount: string; proof: Hex[] };

/** The claims routes of this server (settlement/api.py), wherever they are mounted. */
async function claimsRoutes(account: string): Promise<{ claimable: string | null; history: string | null }> {
  const routes = [...(await serverRoutes())];
  const find = (suffix: string) => routes.find((r) => r.endsWith(suffix))?.replace("{account}", account) ?? null;
  let claimable = find("/accounts/{account}/claimable");
  if (!claimable && (await hasRoute("/v1/claims/{account}"))) claimable = `/v1/claims/${account}`;
  return { claimable, history: find("/accounts/{account}/claims") };
}

type PastClaim = { model_id: number; epoch: number; amount: string; tx_hash: string; block: number };

async function loadRewards(account: string) {
  const paths = await claimsRoutes(account);
  const [earnings, claims, history] = await Promise.all([
    index.earnings(account),
    paths.claimable ? request<any>(paths.claimable) : Promise.resolve(null),
    paths.history ? request<any>(paths.history) : Promise.resolve(null),
  ]);
  const items: ClaimItem[] | null = claims === null ? null : Array.isArray(claims) ? claims : claims.items ?? claims.claims ?? [];
  // Check each proof in the page against the epoch's payout root as the index recorded it.
  const roots = new Map<string, string>();
  for (const id of new Set((items ?? []).map((i) => i.model_id))) {
    const m = await index.model(id).catch(() => null);
    for (const e of m?.epochs ?? []) roots.set(`${id}/${e.epoch}`, e.payout_root.toLowerCase());
  }
  const checked = (items ?? []).map((i) => {
    const root = processProof(payoutLeaf(BigInt(i.index), getAddress(i.account), BigInt(i.amount)), i.proof);
    const want = roots.get(`${i.model_id}/${i.epoch}`);
    return { ...i, proofOk: want ? root.toLowerCase() === want : null };
  });
  const past: PastClaim[] | null = history ? history.claims ?? [] : null;
  return { earnings, items: items === null ? null : checked, past, path: paths.claimable };
}

export function RewardsPage() {
  const w = useStore(wallet);
  const [data, error, reload] = useAsync(() => (w.account ? loadRewards(w.account) : Promise.resolve(null)), [w.account]);
  const [failure, setFailure] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [balance, , reloadBalance] = useAsync(async () => {
    if (!w.account || !w.selected) return null;
    const cfg = await getConfig();
    const { pc } = await clients();
    return (await pc.readContract({ address: cfg.contracts.token, abi: ABI.token, functionName: "balanceOf", args: [w.account] })) as bigint;
  }, [w.account, w.chainId]);

  const claimAll = async () => {
    if (!data?.items?.length) return;
    setBusy(true);
    setFailure(null);
    try {
      const cfg = await getConfig();
      const claims = data.items.map((i) => ({
        modelId: BigInt(i.model_id), epoch: BigInt(i.epoch), index: BigInt(i.index), account: getAddress(i.account), amount: BigInt(i.amount), proof: i.proof,
      }));
      await sendTx(`Claim ${claims.length} allocation${claims.length > 1 ? "s" : ""}`, { address: cfg.contracts.settlement, abi: ABI.settlement, functionName: "claimMany", args: [claims] });
      reloadBalance();
      reload(); // claimable is read from the chain: already current
      setTimeout(reload, 1500); // the index's history follows within a poll
    } catch (e: any) {
      setFailure(e?.message ?? String(e));
    } finally {
      setBusy(false);
    }
  };

  const total = (data?.items ?? []).reduce((s, i) => s + BigInt(i.amount), 0n);
  return (
    <section>
      <h1>Rewards</h1>
      <p class="lead">What your data earned: claim every model's and epoch's allocation in one transaction.</p>
      <NeedsWallet action="see what you can claim">
        {balance !== undefined && balance !== null && (
          <p>
            Wallet balance: <strong data-testid="balance">{formatUnits18(balance)} PVN</strong>
          </p>
        )}
        <ErrorBox error={error} />
        {!data && !error && <Loading what="rewards" />}
        {data && (
          <>
            <h2>Claimable</h2>
            {data.items === null ? (
              <p class="notice" data-testid="claims-missing">
                This server does not mount the claims API yet (settlement/api.py): use <code>provenant claim</code> meanwhile.
              </p>
            ) : (
              <>
                <Table
                  caption="claimable allocations"
                  head={["model", "epoch", "amount", "proof"]}
                  empty="Nothing to claim right now."
                  rows={data.items.map((i) => [
                    <a href={`#/models/${i.model_id}`}>#{i.model_id}</a>,
                    i.epoch,
                    `${formatUnits18(i.amount)} PVN`,
                    i.proofOk === null ? "unchecked" : i.proofOk ? "✔ matches the epoch's root" : "✘ does not match",
                  ])}
                />
                {data.items.length > 0 && (
                  <button class="primary" data-testid="claim-all" disabled={busy} onClick={claimAll}>
                    Claim {formatUnits18(total)} PVN in one transaction
                  </button>
                )}
              </>
            )}
            <ErrorBox error={failure} />
            <h2>History</h2>
            {data.past && (
              <Table
                caption="past claims"
                head={["model", "epoch", "amount", "transaction"]}
                empty="No claims yet."
                rows={data.past.map((c) => [<a href={`#/models/${c.model_id}`}>#{c.model_id}</a>, c.epoch, `${formatUnits18(c.amount)} PVN`, <Hash h={c.tx_hash} />])}
              />
            )}
            <p>
              Received in total: <strong data-testid="total-received">{formatUnits18(data.earnings.total_received)} PVN</strong>
            </p>
            <Table
              caption="earnings by model"
              head={["model", "claimed", "epochs claimed", "owner share"]}
              empty="No claims yet."
              rows={data.earnings.models.map((m: any) => [<a href={`#/models/${m.model_id}`}>#{m.model_id}</a>, formatUnits18(m.claimed), m.epochs_claimed, formatUnits18(m.owner_share)])}
            />
            {data.earnings.reputation && (
              <p class="muted">
                Reputation: {data.earnings.reputation.submitted} submitted · {data.earnings.reputation.approved} approved · {data.earnings.reputation.rejected} rejected
              </p>
            )}
          </>
        )}
      </NeedsWallet>
    </section>
  );
}
