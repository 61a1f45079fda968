// The wallet: EIP-6963 discovery (window.ethereum as a fallback), EIP-1193 requests through viem,
// the chain check, Sign-In with Ethereum, and every transaction's pending / confirmed / failed state
// with its revert reason decoded against every Provenant contract's errors.

import {
  type Abi,
  BaseError,
  ContractFunctionRevertedError,
  type EIP1193Provider,
  type PublicClient,
  type TransactionReceipt,
  type WalletClient,
  UserRejectedRequestError,
  createPublicClient,
  createWalletClient,
  custom,
  decodeErrorResult,
  getAddress,
  numberToHex,
} from "viem";
import { createSiweMessage } from "viem/siwe";
import { getConfig, request, storeSession, storedSession, type SessionInfo } from "./api";
import { Store } from "./store";
import abis from "./generated/abi.json";

export const ABI = {
  token: abis.ProvenantToken as Abi,
  datanets: abis.DatanetRegistry as Abi,
  models: abis.ModelRegistry as Abi,
  escrow: abis.UsageEscrow as Abi,
  settlement: abis.AttributionSettlement as Abi,
};

/** Every custom error of every contract, so a revert bubbling up from the token (say, from the
 * escrow's transferFrom) is decoded too. */
const ALL_ERRORS: Abi = (() => {
  const seen = new Set<string>();
  const out: any[] = [];
  for (const abi of Object.values(ABI)) {
    for (const item of abi as any[]) {
      if (item.type !== "error") continue;
      const sig = `${item.name}(${item.inputs.map((i: any) => i.type).join(",")})`;
      if (!seen.has(sig)) {
        seen.add(sig);
        out.push(item);
      }
    }
  }
  return out as Abi;
})();

export type ProviderInfo = { uuid: string; name: string; icon: string; rdns: string };
export type Discovered = { info: ProviderInfo; provider: EIP1193Provider };

export type WalletState = {
  providers: Discovered[];
  selected: Discovered | null;
  account: `0x${string}` | null;
  chainId: number | null;
  session: SessionInfo | null;
  error: string | null;
};

export const wallet = new Store<WalletState>({
  providers: [],
  selected: null,
  account: null,
  chainId: null,
  session: storedSession(),
  error: null,
});

function setWallet(patch: Partial<WalletState>) {
  wallet.update((w) => ({ ...w, ...patch }));
}

/** EIP-6963: ask every injected wallet to announce itself. */
export function discoverWallets() {
  window.addEventListener("eip6963:announceProvider", (event: any) => {
    const d = event.detail as Discovered;
    if (!d?.info?.uuid || !d.provider) return;
    wallet.update((w) => (w.providers.some((p) => p.info.uuid === d.info.uuid) ? w : { ...w, providers: [...w.providers, d] }));
  });
  window.dispatchEvent(new Event("eip6963:requestProvider"));
  // A legacy wallet that only sets window.ethereum is offered too, after announcements had a moment.
  setTimeout(() => {
    const legacy = (window as any).ethereum as EIP1193Provider | undefined;
    if (legacy && wallet.get().providers.length === 0) {
      setWallet({ providers: [{ info: { uuid: "legacy", name: "Browser wallet", icon: "", rdns: "" }, provider: legacy }] });
    }
  }, 300);
}

let attached: EIP1193Provider | null = null;
function attach(provider: EIP1193Provider) {
  if (attached === provider) return;
  attached = provider;
  provider.on?.("accountsChanged", (accounts: string[]) => {
    const account = accounts[0] ? (getAddress(accounts[0]) as `0x${string}`) : null;
    const s = wallet.get().session;
    if (s && account && s.address.toLowerCase() !== account.toLowerCase()) {
      storeSession(null);
      setWallet({ account, session: null });
    } else setWallet({ account });
  });
  provider.on?.("chainChanged", (id: string) => setWallet({ chainId: Number(id) }));
}

export async function connect(d?: Discovered): Promise<void> {
  const chosen = d ?? wallet.get().providers[0];
  if (!chosen) {
    setWallet({ error: "No wallet found: install an EIP-1193 wallet (MetaMask, Rabby, ...) and reload." });
    return;
  }
  try {
    const accounts = (await chosen.provider.request({ method: "eth_requestAccounts" })) as string[];
    const chainId = Number(await chosen.provider.request({ method: "eth_chainId" }));
    attach(chosen.provider);
    const account = accounts[0] ? (getAddress(accounts[0]) as `0x${string}`) : null;
    const s = storedSession();
    const session = s && account && s.address.toLowerCase() === account.toLowerCase() ? s : null;
    setWallet({ selected: chosen, account, chainId, session, error: null });
  } catch (e) {
    setWallet({ error: errorText(e) });
  }
}

export function disconnect() {
  storeSession(null);
  setWallet({ selected: null, account: null, chainId: null, session: null });
}

export async function switchChain(): Promise<void> {
  const w = wallet.get();
  const cfg = await getConfig();
  if (!w.selected) return;
  const chainId = numberToHex(cfg.chain_id);
  try {
    await w.selected.provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId }] });
  } catch (e: any) {
    if (e?.code === 4902) {
      // The wallet does not know the chain: offer this server's details.
      await w.selected.provider.request({
        method: "wallet_addEthereumChain",
        params: [{ chainId, chainName: `Provenant (${cfg.chain_id})`, nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: [] as string[] }],
      } as any);
    } else {
      setWallet({ error: errorText(e) });
      return;
    }
  }
  setWallet({ chainId: Number(await w.selected.provider.request({ method: "eth_chainId" })), error: null });
}

function requireReady(): { provider: EIP1193Provider; account: `0x${string}` } {
  const w = wallet.get();
  if (!w.selected || !w.account) throw new Error("connect a wallet first");
  return { provider: w.selected.provider, account: w.account };
}

export async function clients(): Promise<{ wc: WalletClient; pc: PublicClient; account: `0x${string}` }> {
  const { provider, account } = requireReady();
  const cfg = await getConfig();
  const w = wallet.get();
  if (w.chainId !== cfg.chain_id) throw new Error(`the wallet is on chain ${w.chainId}; switch it to chain ${cfg.chain_id} first`);
  const transport = custom(provider);
  return {
    wc: createWalletClient({ account, transport }),
    pc: createPublicClient({ transport }) as PublicClient,
    account,
  };
}

/** Sign-In with Ethereum (EIP-4361) for API writes; the token lives in this tab's sessionStorage. */
export async function signIn(): Promise<SessionInfo> {
  const { wc, account } = await clients();
  const cfg = await getConfig();
  const { nonce } = await request<{ nonce: string }>("/v1/auth/nonce");
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  const message = createSiweMessage({
    domain: cfg.domain,
    address: account,
    statement: "Sign in to Provenant to upload contributions and use the API.",
    uri: window.location.origin + "/",
    version: "1",
    chainId: cfg.chain_id,
    nonce,
    issuedAt: now,
    expirationTime: new Date(now.getTime() + 8 * 3600 * 1000),
  });
  const signature = await wc.signMessage({ account, message });
  const out = await request<{ token: string; address: string; expires_at: number }>("/v1/auth/login", {
    method: "POST",
    body: JSON.stringify({ message, signature }),
  });
  const session = { token: out.token, address: out.address, expires_at: out.expires_at };
  storeSession(session);
  setWallet({ session });
  return session;
}

export async function signOut() {
  const s = wallet.get().session;
  if (s) {
    try {
      await request("/v1/auth/logout", { method: "POST", auth: true });
    } catch {
      /* an expired token is as good as logged out */
    }
  }
  storeSession(null);
  setWallet({ session: null });
}

export async function ensureSignedIn(): Promise<SessionInfo> {
  const w = wallet.get();
  if (w.session && w.account && w.session.address.toLowerCase() === w.account.toLowerCase()) return w.session;
  return signIn();
}

// -- transactions ------------------------------------------------------------------------------

export type TxState = {
  id: number;
  label: string;
  status: "signing" | "pending" | "confirmed" | "failed";
  hash?: `0x${string}`;
  reason?: string;
  block?: bigint;
};

export const txs = new Store<TxState[]>([]);
let nextTx = 1;

function setTx(id: number, patch: Partial<TxState>) {
  txs.update((all) => all.map((t) => (t.id === id ? { ...t, ...patch } : t)));
}

/** Decode a revert into "ErrorName(arg, ...)" using every Provenant contract's errors. */
export function errorText(e: any): string {
  if (e instanceof BaseError) {
    if (e.walk((x) => x instanceof UserRejectedRequestError)) return "you rejected the request in your wallet";
    const reverted = e.walk((x) => x instanceof ContractFunctionRevertedError) as ContractFunctionRevertedError | null;
    if (reverted?.data?.errorName) {
      const args = (reverted.data.args ?? []).map((a: any) => String(a)).join(", ");
      return `reverted: ${reverted.data.errorName}(${args})`;
    }
    if (reverted?.reason) return `reverted: ${reverted.reason}`;
    const raw = findRevertData(e);
    if (raw) {
      try {
        const d = decodeErrorResult({ abi: ALL_ERRORS, data: raw });
        return `reverted: ${d.errorName}(${(d.args ?? []).map(String).join(", ")})`;
      } catch {
        return `reverted with data ${raw.slice(0, 10)}…`;
      }
    }
    return e.shortMessage || e.message;
  }
  if (e?.code === 4001) return "you rejected the request in your wallet";
  return e?.message ?? String(e);
}

function findRevertData(e: any): `0x${string}` | null {
  let cur = e;
  for (let i = 0; cur && i < 8; i++) {
    const d = cur.data?.data ?? cur.data;
    if (typeof d === "string" && d.startsWith("0x") && d.length >= 10) return d as `0x${string}`;
    cur = cur.cause;
  }
  return null;
}

export type Call = { address: `0x${string}`; abi: Abi; functionName: string; args: readonly unknown[] };

/** Simulate (so a revert is caught and explained before signing), send through the wallet, wait.
 * The transaction's state is shown in the page's transaction panel the whole time. */
export async function sendTx(label: string, call: Call): Promise<TransactionReceipt> {
  const id = nextTx++;
  txs.update((all) => [{ id, label, status: "signing" as const }, ...all].slice(0, 20));
  try {
    const { wc, pc, account } = await clients();
    const abi = [...call.abi, ...ALL_ERRORS.filter((x: any) => !(call.abi as any[]).some((y) => y.type === "error" && y.name === x.name))] as Abi;
    const { request: req } = await pc.simulateContract({ ...call, abi, account } as any);
    const hash = await wc.writeContract({ ...(req as any), account, chain: null });
    setTx(id, { status: "pending", hash });
    const receipt = await pc.waitForTransactionReceipt({ hash, pollingInterval: 250 });
    if (receipt.status !== "success") {
      setTx(id, { status: "failed", reason: "reverted on chain", block: receipt.blockNumber });
      throw new Error(`${label}: reverted on chain`);
    }
    setTx(id, { status: "confirmed", block: receipt.blockNumber });
    return receipt;
  } catch (e) {
    const reason = errorText(e);
    const cur = txs.get().find((t) => t.id === id);
    if (cur && cur.status !== "failed") setTx(id, { status: "failed", reason });
    throw new Error(reason);
  }
}

export function short(a: string | null | undefined): string {
  if (!a) return "";
  return a.length > 12 ? `${a.slice(0, 6)}…${a.slice(-4)}` : a;
}
