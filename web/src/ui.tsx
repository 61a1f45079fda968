import type { ComponentChildren } from "preact";
import { useStore } from "./store";
import { short, wallet } from "./wallet";

export function Loading({ what }: { what?: string }) {
  return (
    <p class="muted" role="status">
      Loading{what ? ` ${what}` : ""}…
    </p>
  );
}

export function ErrorBox({ error }: { error?: string | null }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {error}
    </p>
  );
}

export function Addr({ a }: { a?: string | null }) {
  if (!a) return <span class="muted">—</span>;
  return (
    <code class="addr" title={a}>
      {short(a)}
    </code>
  );
}

export function Hash({ h }: { h?: string | null }) {
  if (!h) return <span class="muted">—</span>;
  return (
    <code class="hash" title={h}>
      {h.length > 20 ? `${h.slice(0, 10)}…${h.slice(-6)}` : h}
    </code>
  );
}

export function Status({ s }: { s: string }) {
  return <span class={`status status-${s}`}>{s}</span>;
}

export function Card({ title, children, id }: { title: string; children: ComponentChildren; id?: string }) {
  return (
    <section class="card" aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

/** What a page needs before it can send: a connected wallet on the right chain. */
export function NeedsWallet({ children, action }: { children: ComponentChildren; action: string }) {
  const w = useStore(wallet);
  if (!w.account)
    return (
      <p class="notice" data-testid="needs-wallet">
        Connect a wallet (top right) to {action}.
      </p>
    );
  return <>{children}</>;
}

export function Table({ head, rows, empty, caption }: { head: string[]; rows: ComponentChildren[][]; empty: string; caption?: string }) {
  if (!rows.length) return <p class="muted">{empty}</p>;
  return (
    <div class="scroll">
      <table>
        {caption && <caption class="sr-only">{caption}</caption>}
        <thead>
          <tr>
            {head.map((h) => (
              <th scope="col" key={h}>
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) => (
            <tr key={i}>
              {r.map((c, j) => (
                <td key={j}>{c}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
