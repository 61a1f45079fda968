import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { getConfig } from "./api";
import { useAsync, useStore } from "./store";
import { connect, disconnect, discoverWallets, signIn, signOut, short, switchChain, txs, wallet } from "./wallet";
import { DatanetPage, DatanetsPage } from "./pages/datanets";
import { ContributePage } from "./pages/contribute";
import { CuratePage } from "./pages/curate";
import { ModelPage, ModelsPage } from "./pages/models";
import { PlaygroundPage } from "./pages/playground";
import { RewardsPage } from "./pages/rewards";
import { FactoryPage } from "./pages/factory";
import { CreateDatanetPage } from "./pages/create";
import { AgentPage, AgentsPage } from "./pages/agents";

const NAV: [string, string][] = [
  ["#/datanets", "Datanets"],
  ["#/contribute", "Contribute"],
  ["#/curate", "Curate"],
  ["#/factory", "Model Factory"],
  ["#/models", "Models"],
  ["#/playground", "Playground"],
  ["#/rewards", "Rewards"],
  ["#/agents", "Agents"],
];

function useRoute(): string[] {
  const read = () => (location.hash.replace(/^#\/?/, "") || "datanets").split("?")[0].split("/").filter(Boolean);
  const [route, setRoute] = useState(read());
  useEffect(() => {
    const on = () => {
      setRoute(read());
      document.getElementById("main")?.focus({ preventScroll: true });
    };
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

function WalletBar() {
  const w = useStore(wallet);
  const [cfg] = useAsync(getConfig, []);
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<string | null>(null);
  const wrongChain = !!(cfg && w.account && w.chainId !== cfg.chain_id);
  const run = async (fn: () => Promise<unknown>) => {
    setBusy(true);
    setErr(null);
    try {
      await fn();
    } catch (e: any) {
      setErr(e?.message ?? String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="wallet" aria-label="wallet">
      {!w.account ? (
        w.providers.length > 1 ? (
          <span class="row">
            {w.providers.map((p) => (
              <button key={p.info.uuid} onClick={() => run(() => connect(p))} disabled={busy}>
                {p.info.icon && <img src={p.info.icon} alt="" width={16} height={16} />} Connect {p.info.name}
              </button>
            ))}
          </span>
        ) : (
          <button class="primary" data-testid="connect" onClick={() => run(() => connect())} disabled={busy}>
            {w.providers[0] ? `Connect ${w.providers[0].info.name}` : "Connect wallet"}
          </button>
        )
      ) : (
        <span class="row">
          <span class="account" data-testid="account" title={w.account}>
            {short(w.account)}
          </span>
          <span class={`chain ${wrongChain ? "bad" : ""}`} data-testid="chain">
            chain {w.chainId}
          </span>
          {wrongChain ? (
            <button class="warn" data-testid="switch-chain" onClick={() => run(switchChain)} disabled={busy}>
              Switch to chain {cfg!.chain_id}
            </button>
          ) : w.session ? (
            <button data-testid="sign-out" onClick={() => run(signOut)} disabled={busy} title="End the Sign-In with Ethereum session">
              Signed in · sign out
            </button>
          ) : (
            <button data-testid="sign-in" onClick={() => run(signIn)} disabled={busy}>
              Sign in with Ethereum
            </button>
          )}
          <button class="link" onClick={disconnect}>
            Disconnect
          </button>
        </span>
      )}
      {(err || w.error) && (
        <p class="error" role="alert">
          {err || w.error}
        </p>
      )}
    </div>
  );
}

function TxPanel() {
  const list = useStore(txs);
  if (!list.length) return null;
  return (
    <section class="txs" aria-live="polite" aria-label="transactions">
      <h2 class="sr-only">Transactions</h2>
      <ul>
        {list.slice(0, 5).map((t) => (
          <li key={t.id} class={`tx ${t.status}`} data-testid="tx" data-status={t.status}>
            <strong>{t.label}</strong> <span class="badge">{t.status === "signing" ? "waiting for wallet" : t.status}</span>
            {t.hash && <code title={t.hash}> {short(t.hash)}</code>}
            {t.block !== undefined && <span> · block {String(t.block)}</span>}
            {t.reason && <div class="reason">{t.reason}</div>}
          </li>
        ))}
      </ul>
    </section>
  );
}

function App() {
  const route = useRoute();
  const [head, a, b] = route;
  let page;
  switch (head) {
    case "datanets":
      page = a === "new" ? <CreateDatanetPage /> : a ? <DatanetPage id={Number(a)} /> : <DatanetsPage />;
      break;
    case "contribute":
      page = <ContributePage preselect={a ? Number(a) : undefined} />;
      break;
    case "curate":
      page = <CuratePage preselect={a ? Number(a) : undefined} />;
      break;
    case "factory":
      page = <FactoryPage jobId={a} />;
      break;
    case "models":
      page = a ? <ModelPage id={Number(a)} /> : <ModelsPage />;
      break;
    case "playground":
      page = <PlaygroundPage preselect={a} />;
      break;
    case "rewards":
      page = <RewardsPage />;
      break;
    case "agents":
      page = a ? <AgentPage id={Number(a)} action={b} /> : <AgentsPage />;
      break;
    default:
      page = (
        <section>
          <h1>Not found</h1>
          <p>
            No page at <code>#{route.join("/")}</code>. <a href="#/datanets">Go to Datanets</a>.
          </p>
        </section>
      );
  }
  return (
    <>
      <header class="top">
        <a class="brand" href="#/datanets">
          Provenant
        </a>
        <nav aria-label="pages">
          {NAV.map(([href, label]) => (
            <a key={href} href={href} aria-current={href.slice(2) === head ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <WalletBar />
      </header>
      <TxPanel />
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </>
  );
}

discoverWallets();
render(<App />, document.getElementById("app")!);
