/**
 * The Model Factory's selection filters (POST /v1/jobs `filters`, backend factory/selection.py):
 * contributors to keep or leave out, a block or time range, a row cap and a sampling weight per
 * Datanet, and the held-out fraction.
 *
 * The page checks what it can know from the form alone (address syntax, whole numbers, a range's
 * order, held-out in [0, 1), positive caps and weights) so that nothing obviously wrong is signed
 * for. The inputs carry no min/max attributes on purpose: the browser's own constraint check would
 * block the submit with a bubble that names no field, instead of these messages. The server stays the judge of its own limits (e.g. the largest sampling weight), and its 422
 * message is shown next to the form by the caller.
 */
import { isAddress } from "viem";
import { short } from "../wallet";

export type FilterForm = {
  contributors: string;
  exclude: string;
  rangeKind: "none" | "block" | "time";
  from: string;
  to: string;
  maxRows: Record<number, string>;
  weights: Record<number, string>;
  heldOut: string;
};

export const EMPTY_FILTERS: FilterForm = { contributors: "", exclude: "", rangeKind: "none", from: "", to: "", maxRows: {}, weights: {}, heldOut: "0.1" };

export type FiltersBody = {
  contributors: string[]; exclude_contributors: string[];
  from_block: number | null; to_block: number | null; from_time: number | null; to_time: number | null;
  max_rows: Record<string, number>; weights: Record<string, number>; held_out: number;
};

const addresses = (s: string) => s.split(/[\s,]+/).map((a) => a.trim()).filter(Boolean);

/** A datetime-local value ("2026-11-26T01:30") as unix seconds, or NaN. */
const unixSeconds = (s: string) => Math.floor(new Date(s).getTime() / 1000);

/** The filters as the API's JSON, or the list of problems (each naming its field). */
export function filtersBody(f: FilterForm, datanets: number[]): { body: FiltersBody; problems: [] } | { body: null; problems: string[] } {
  const problems: string[] = [];
  const include = addresses(f.contributors), exclude = addresses(f.exclude);
  for (const [field, list] of [["only these contributors", include], ["leave out contributors", exclude]] as const) {
    const bad = list.filter((a) => !isAddress(a, { strict: false }));
    if (bad.length) problems.push(`${field}: not addresses: ${bad.join(", ")}`);
  }
  const both = include.filter((a) => exclude.some((b) => b.toLowerCase() === a.toLowerCase()));
  if (both.length) problems.push(`contributors both kept and left out: ${both.join(", ")}`);

  let from: number | null = null, to: number | null = null;
  if (f.rangeKind !== "none") {
    const parse = (s: string, end: string): number | null => {
      if (!s.trim()) return null;
      const v = f.rangeKind === "block" ? Number(s.trim()) : unixSeconds(s);
      if (!Number.isSafeInteger(v) || v < 0) {
        problems.push(f.rangeKind === "block" ? `${end} block: a whole number of at least 0, got "${s}"` : `${end} time: not a date and time, got "${s}"`);
        return null;
      }
      return v;
    };
    from = parse(f.from, "from");
    to = parse(f.to, "to");
    if (from !== null && to !== null && from > to) problems.push(`the ${f.rangeKind} range starts after it ends (${f.from} > ${f.to})`);
  }

  const maxRows: Record<string, number> = {}, weights: Record<string, number> = {};
  for (const d of datanets) {
    const cap = (f.maxRows[d] ?? "").trim(), w = (f.weights[d] ?? "").trim();
    if (cap) {
      const v = Number(cap);
      if (!Number.isSafeInteger(v) || v < 1) problems.push(`row cap for Datanet #${d}: a whole number of at least 1, got "${cap}"`);
      else maxRows[String(d)] = v;
    }
    if (w) {
      const v = Number(w);
      if (!isFinite(v) || v <= 0) problems.push(`sampling weight for Datanet #${d}: a number above 0, got "${w}"`);
      else if (v !== 1) weights[String(d)] = v;
    }
  }
  const held = Number(f.heldOut.trim() || "0");
  if (!isFinite(held) || held < 0 || held >= 1) problems.push(`held-out fraction: a number from 0 up to (not including) 1, got "${f.heldOut}"`);

  if (problems.length) return { body: null, problems };
  const block = f.rangeKind === "block", time = f.rangeKind === "time";
  return {
    body: {
      contributors: include, exclude_contributors: exclude,
      from_block: block ? from : null, to_block: block ? to : null, from_time: time ? from : null, to_time: time ? to : null,
      max_rows: maxRows, weights, held_out: held,
    },
    problems: [],
  };
}

type Props = { value: FilterForm; onChange: (f: FilterForm) => void; datanets: { id: number; name: string }[]; problems: string[]; serverError: string | null };

/** The filters fieldset; problems (the page's) and serverError (the server's 422) are shown beside it. */
export function FiltersFields({ value: f, onChange, datanets, problems, serverError }: Props) {
  const set = (patch: Partial<FilterForm>) => onChange({ ...f, ...patch });
  const text = (e: Event) => (e.target as HTMLInputElement).value;
  const isTime = f.rangeKind === "time";
  return (
    <fieldset data-testid="filters">
      <legend>Selection filters (optional)</legend>
      <label>
        <span>Only these contributors (addresses, comma or line separated; empty: everyone)</span>
        <textarea rows={2} data-testid="filter-contributors" value={f.contributors} onInput={(e) => set({ contributors: text(e) })} />
      </label>
      <label>
        <span>Leave out these contributors</span>
        <textarea rows={2} data-testid="filter-exclude" value={f.exclude} onInput={(e) => set({ exclude: text(e) })} />
      </label>
      <div class="fields">
        <label>
          <span>Recorded in</span>
          <select data-testid="filter-range" value={f.rangeKind} onChange={(e) => set({ rangeKind: text(e) as FilterForm["rangeKind"], from: "", to: "" })}>
            <option value="none">any block</option>
            <option value="block">a block range</option>
            <option value="time">a time range</option>
          </select>
        </label>
        {f.rangeKind !== "none" && (
          <>
            <label>
              <span>from {isTime ? "(local time)" : "block"}</span>
              <input data-testid="filter-from" type={isTime ? "datetime-local" : "number"} value={f.from} onInput={(e) => set({ from: text(e) })} />
            </label>
            <label>
              <span>to {isTime ? "(local time)" : "block"}</span>
              <input data-testid="filter-to" type={isTime ? "datetime-local" : "number"} value={f.to} onInput={(e) => set({ to: text(e) })} />
            </label>
          </>
        )}
        <label>
          <span>held-out fraction</span>
          <input data-testid="filter-held-out" type="number" step="any" value={f.heldOut} onInput={(e) => set({ heldOut: text(e) })} />
        </label>
      </div>
      {datanets.length > 0 && (
        <div class="scroll">
          <table data-testid="filter-per-datanet">
            <caption class="sr-only">row cap and sampling weight per chosen Datanet</caption>
            <thead>
              <tr>
                <th scope="col">Datanet</th>
                <th scope="col">row cap</th>
                <th scope="col">weight</th>
              </tr>
            </thead>
            <tbody>
              {datanets.map((d) => (
                <tr key={d.id}>
                  <td>#{d.id} {d.name}</td>
                  <td>
                    <input aria-label={`row cap for Datanet ${d.id}`} data-testid={`filter-max-rows-${d.id}`} inputMode="numeric" placeholder="all" size={6}
                      value={f.maxRows[d.id] ?? ""} onInput={(e) => set({ maxRows: { ...f.maxRows, [d.id]: text(e) } })} />
                  </td>
                  <td>
                    <input aria-label={`sampling weight for Datanet ${d.id}`} data-testid={`filter-weight-${d.id}`} inputMode="decimal" placeholder="1" size={5}
                      value={f.weights[d.id] ?? ""} onInput={(e) => set({ weights: { ...f.weights, [d.id]: text(e) } })} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {problems.length > 0 && (
        <ul class="error" role="alert" data-testid="filter-problems">
          {problems.map((p) => <li key={p}>{p}</li>)}
        </ul>
      )}
      {serverError && (
        <p class="error" role="alert" data-testid="filter-server-error">
          The server refused the settings: {serverError}
        </p>
      )}
    </fieldset>
  );
}

/** A job's filters (SelectionFilters.to_dict()) in one line each, defaults left out. */
export function FiltersSummary({ f }: { f: Record<string, any> }) {
  const parts: string[] = [];
  // Addresses shortened (the full list is in the title): a phone-width line must not overflow.
  const who = (xs: string[]) => (xs.length > 3 ? `${xs.slice(0, 3).map(short).join(", ")} and ${xs.length - 3} more` : xs.map(short).join(", "));
  if (f.contributors?.length) parts.push(`only ${who(f.contributors)}`);
  if (f.exclude_contributors?.length) parts.push(`leaving out ${who(f.exclude_contributors)}`);
  if (f.from_block != null || f.to_block != null) parts.push(`blocks ${f.from_block ?? "0"}–${f.to_block ?? "latest"}`);
  const day = (t: number | null | undefined) => (t == null ? "…" : new Date(t * 1000).toISOString().slice(0, 16).replace("T", " "));
  if (f.from_time != null || f.to_time != null) parts.push(`recorded ${day(f.from_time)} to ${day(f.to_time)} UTC`);
  for (const [d, n] of Object.entries(f.max_rows ?? {})) parts.push(`at most ${n} rows of #${d}`);
  for (const [d, w] of Object.entries(f.weights ?? {})) parts.push(`weight ${w} for #${d}`);
  if (typeof f.held_out === "number") parts.push(`${(f.held_out * 100).toFixed(0)} % held out`);
  if (!parts.length) return null;
  return (
    <p class="muted" data-testid="job-filters" style="overflow-wrap: anywhere"
      title={[...(f.contributors ?? []).map((a: string) => `only ${a}`), ...(f.exclude_contributors ?? []).map((a: string) => `leaving out ${a}`)].join("\n") || undefined}>
      Selection: {parts.join(" · ")}
    </p>
  );
}
