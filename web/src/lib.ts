// Checks the page does itself: a contribution file's rows (before anything is signed), a receipt's
// signature and attribution hash, a payout Merkle proof, all with the same rules as the backend.

import { concat, encodeAbiParameters, keccak256, recoverTypedDataAddress, sha256, stringToHex, toBytes, type Hex } from "viem";

// ---- contribution files (mirrors backend/provenant/datanets/validation.py) --------------------

export type Rules = { task: string; labels: string[]; max_rows: number; max_bytes: number; max_line_bytes: number };
export type LineError = { line: number | null; problem: string };

const ROW_KEYS: Record<string, string[]> = {
  classification: ["text", "label"],
  text: ["text"],
  prompt_completion: ["prompt", "completion"],
};

export function rulesFrom(meta: Record<string, any> | null): Rules | null {
  if (!meta) return null;
  return {
    task: meta.task ?? "classification",
    labels: Array.isArray(meta.labels) ? meta.labels.map(String) : [],
    max_rows: Number(meta.max_rows_per_file ?? 1000),
    max_bytes: Number(meta.max_bytes_per_file ?? 1_048_576),
    max_line_bytes: 16_384,
  };
}

function show(v: unknown): string {
  const t = typeof v === "string" ? `'${v}'` : JSON.stringify(v);
  return t.length <= 40 ? t : t.slice(0, 37) + "...";
}

/** Find duplicate keys in one JSON object line (JSON.parse keeps the last silently). */
function duplicateKey(text: string): string | null {
  const keys = new Set<string>();
  let depth = 0;
  const re = /"((?:[^"\\]|\\.)*)"\s*(:)?|[{}[\]]/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) {
    const tok = m[0];
    if (tok === "{" || tok === "[") depth++;
    else if (tok === "}" || tok === "]") depth--;
    else if (m[2] && depth === 1) {
      const k = JSON.parse(`"${m[1]}"`);
      if (keys.has(k)) return k;
      keys.add(k);
    }
  }
  return null;
}

/** Every problem in the file, by line (the server stops at the first; the page shows them all). */
export function validateJsonl(bytes: Uint8Array, rules: Rules | null): { errors: LineError[]; rows: number } {
  const errors: LineError[] = [];
  const limits = rules ?? { task: "", labels: [], max_rows: Infinity, max_bytes: Infinity, max_line_bytes: 16_384 };
  if (bytes.length === 0) return { errors: [{ line: null, problem: "file is empty" }], rows: 0 };
  if (bytes.length > limits.max_bytes) errors.push({ line: null, problem: `file is ${bytes.length} bytes, over the limit of ${limits.max_bytes} bytes` });
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let start = 0;
  let line = 0;
  let rows = 0;
  while (start < bytes.length && errors.length < 200) {
    let end = bytes.indexOf(10, start);
    const hasNl = end !== -1;
    if (!hasNl) end = bytes.length;
    const body = bytes.subarray(start, end);
    start = hasNl ? end + 1 : end;
    line++;
    const err = (problem: string) => errors.push({ line, problem });
    if (body.length > limits.max_line_bytes) {
      err(`line is longer than the limit of ${limits.max_line_bytes} bytes`);
      continue;
    }
    let text: string;
    try {
      text = decoder.decode(body);
    } catch {
      err("invalid UTF-8");
      continue;
    }
    if (!text.trim()) {
      err("blank line (only one trailing newline is allowed at the end of the file)");
      continue;
    }
    if (line === 1 && text.startsWith("\ufeff")) {
      err("file starts with a byte-order mark; save it as UTF-8 without BOM");
      continue;
    }
    let row: any;
    try {
      row = JSON.parse(text);
    } catch (e: any) {
      err(`not valid JSON: ${String(e?.message ?? e).replace(/^JSON\.parse: /, "")}`);
      continue;
    }
    if (row === null || typeof row !== "object" || Array.isArray(row)) {
      err(`each line must be a JSON object, got ${row === null ? "null" : Array.isArray(row) ? "list" : typeof row}`);
      continue;
    }
    const dup = duplicateKey(text);
    if (dup !== null) {
      err(`not valid JSON: duplicate key ${show(dup)}`);
      continue;
    }
    rows++;
    if (rows > limits.max_rows) {
      err(`too many rows: the limit is ${limits.max_rows} rows per file`);
      break;
    }
    if (!rules) continue;
    const wanted = ROW_KEYS[rules.task] ?? [];
    const missing = wanted.filter((k) => !(k in row));
    if (missing.length) {
      err(`missing key ${missing.map((k) => `'${k}'`).join(", ")} (a ${rules.task} row needs ${wanted.join(", ")})`);
      continue;
    }
    const extra = Object.keys(row).filter((k) => !wanted.includes(k)).sort();
    if (extra.length) {
      err(`unexpected key ${extra.map(show).join(", ")} (a ${rules.task} row has only ${wanted.join(", ")})`);
      continue;
    }
    const bad = wanted.find((k) => typeof row[k] !== "string");
    if (bad) {
      err(`'${bad}' must be a string, got ${row[bad] === null ? "NoneType" : typeof row[bad]}`);
      continue;
    }
    const empty = wanted.find((k) => k !== "label" && !row[k].trim());
    if (empty) {
      err(`'${empty}' is empty`);
      continue;
    }
    if (rules.task === "classification" && !rules.labels.includes(row.label)) err(`label ${show(row.label)} is not one of ${rules.labels.join(", ")}`);
  }
  return { errors, rows };
}

// ---- canonical JSON, as the backend hashes it ------------------------------------------------

/** A number kept as the literal the server wrote (Python's repr of a float, which JS cannot rebuild). */
class RawNumber {
  constructor(public raw: string) {}
}

/** JSON.parse that keeps number literals, so a value can be re-serialised byte for byte. */
export function parseRaw(text: string): any {
  let i = 0;
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const value = (): any => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const o: Record<string, any> = {};
      ws();
      if (text[i] === "}") return i++, o;
      for (;;) {
        ws();
        const k = str();
        ws();
        i++; // :
        o[k] = value();
        ws();
        if (text[i++] === "}") return o;
      }
    }
    if (c === "[") {
      i++;
      const a: any[] = [];
      ws();
      if (text[i] === "]") return i++, a;
      for (;;) {
        a.push(value());
        ws();
        if (text[i++] === "]") return a;
      }
    }
    if (c === '"') return str();
    if (text.startsWith("true", i)) return (i += 4), true;
    if (text.startsWith("false", i)) return (i += 5), false;
    if (text.startsWith("null", i)) return (i += 4), null;
    const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 64));
    if (!m) throw new Error(`bad JSON at ${i}`);
    i += m[0].length;
    return new RawNumber(m[0]);
  };
  const str = (): string => {
    const startAt = i;
    i++;
    while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(startAt, i));
  };
  return value();
}

/** Sorted keys, "," and ":" separators, UTF-8 (Python's json.dumps(sort_keys=True, ensure_ascii=False)). */
export function canonicalJson(v: any): string {
  if (v instanceof RawNumber) return v.raw;
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(v).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(",")}}`;
}

export function plain(v: any): any {
  if (v instanceof RawNumber) return Number(v.raw);
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map(plain);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
}

// ---- receipts ---------------------------------------------------------------------------------

export const RECEIPT_TYPES = {
  Receipt: [
    { name: "callId", type: "bytes32" },
    { name: "modelId", type: "uint256" },
    { name: "adapterHash", type: "bytes32" },
    { name: "lineageRoot", type: "bytes32" },
    { name: "consumer", type: "address" },
    { name: "fee", type: "uint256" },
    { name: "promptHash", type: "bytes32" },
    { name: "outputHash", type: "bytes32" },
    { name: "attributionHash", type: "bytes32" },
    { name: "timestamp", type: "uint64" },
  ],
} as const;

export const VOUCHER_TYPES = {
  Voucher: [
    { name: "consumer", type: "address" },
    { name: "modelId", type: "uint256" },
    { name: "cumulativeAmount", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export const PERMIT_TYPES = {
  Permit: [
    { name: "owner", type: "address" },
    { name: "spender", type: "address" },
    { name: "value", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export type Check = { what: string; ok: boolean; detail: string };

/** Check a receipt in the page: who signed it, its attribution hash, what was asked and answered,
 * and its model's registered lineage root, adapter hash and serving key. `raw` is the receipt
 * parsed with parseRaw (number literals kept). */
export async function verifyReceipt(
  raw: any,
  expect: { server?: string; lineageRoot?: string; adapterHash?: string; prompt?: string; output?: string },
): Promise<Check[]> {
  const r = plain(raw);
  const checks: Check[] = [];
  const attrHash = sha256(toBytes(canonicalJson(raw.attribution)));
  checks.push({ what: "attribution hash", ok: attrHash === r.attribution_hash, detail: attrHash === r.attribution_hash ? "the ancestry shown is what was signed" : `computed ${attrHash}` });
  let signer = "";
  try {
    signer = await recoverTypedDataAddress({
      domain: { name: "Provenant Receipt", version: "1", chainId: BigInt(r.chain_id), verifyingContract: r.verifying_contract },
      types: RECEIPT_TYPES,
      primaryType: "Receipt",
      message: {
        callId: r.call_id, modelId: BigInt(r.model_id), adapterHash: r.adapter_hash, lineageRoot: r.lineage_root,
        consumer: r.consumer, fee: BigInt(r.fee), promptHash: r.prompt_hash, outputHash: r.output_hash,
        attributionHash: r.attribution_hash, timestamp: BigInt(r.timestamp),
      },
      signature: r.signature,
    });
  } catch (e: any) {
    signer = "";
  }
  const want = expect.server ?? r.signer;
  checks.push({
    what: "EIP-712 signature",
    ok: !!signer && signer.toLowerCase() === String(want).toLowerCase(),
    detail: signer ? `signed by ${signer}${expect.server ? " (the model's registered serving key on chain)" : ""}` : "signature does not recover",
  });
  const salted = (t: string) => keccak256(concat([r.salt as Hex, stringToHex(t)]));
  if (expect.prompt !== undefined) checks.push({ what: "prompt hash", ok: salted(expect.prompt) === r.prompt_hash, detail: "keccak(salt ‖ your input)" });
  if (expect.output !== undefined) checks.push({ what: "output hash", ok: salted(expect.output) === r.output_hash, detail: "keccak(salt ‖ the answer)" });
  if (expect.lineageRoot) checks.push({ what: "lineage root", ok: expect.lineageRoot.toLowerCase() === String(r.lineage_root).toLowerCase(), detail: "equals the model's registered lineage root" });
  if (expect.adapterHash) checks.push({ what: "adapter hash", ok: expect.adapterHash.toLowerCase() === String(r.adapter_hash).toLowerCase(), detail: "equals the model's registered adapter hash" });
  return checks;
}

// ---- payout proofs (OpenZeppelin StandardMerkleTree: leaf = keccak(keccak(abi.encode(index, account, amount)))) ----

export function payoutLeaf(index: bigint, account: `0x${string}`, amount: bigint): Hex {
  return keccak256(keccak256(encodeAbiParameters([{ type: "uint256" }, { type: "address" }, { type: "uint256" }], [index, account, amount])));
}

export function processProof(leaf: Hex, proof: Hex[]): Hex {
  let h = leaf;
  for (const p of proof) h = BigInt(h) < BigInt(p) ? keccak256(concat([h, p])) : keccak256(concat([p, h]));
  return h;
}

export function formatUnits18(v: string | number | bigint | null | undefined): string {
  if (v === null || v === undefined || v === "") return "—";
  const n = BigInt(v);
  const neg = n < 0n;
  const a = neg ? -n : n;
  const whole = a / 10n ** 18n;
  const frac = (a % 10n ** 18n).toString().padStart(18, "0").replace(/0+$/, "").slice(0, 6);
  return `${neg ? "-" : ""}${whole.toLocaleString("en-US")}${frac ? "." + frac : ""}`;
}

// ---- duplicate rows, as the backend flags them (provenant/datanets/duplicates.py) ----------------
// Content = `text`, or `prompt` + `completion`, NFKC-normalised, case-folded, whitespace collapsed.
// Exact: the same content. Near: Jaccard similarity of word 3-grams >= 0.8 (computed exactly here;
// the backend estimates it with MinHash, so a borderline pair may differ), or words added: one row's
// words (>= 4), in order, are the other's with up to as many words added (`addsWords`).
export type DupFlag = { line: number; kind: "exact" | "near"; of_contribution: number | null; of_line: number; similarity: number };

export function normalisedText(row: any): string {
  const parts = row && typeof row === "object" ? ("text" in row ? [row.text] : [row.prompt ?? "", row.completion ?? ""]) : [String(row)];
  return parts.map((p: any) => String(p).normalize("NFKC").toLowerCase().split(/\s+/).filter(Boolean).join(" ")).join(" ");
}

function shingles(text: string): Set<string> {
  const w = text.split(" ").filter(Boolean);
  const out = new Set<string>();
  for (let i = 0; i < Math.max(1, w.length - 2); i++) out.add(w.slice(i, i + 3).join(" "));
  return out;
}

function wordsOf(text: string): string[] {
  return text.match(/[\p{L}\p{N}_]+/gu) ?? [];
}

/** One word list is the other with words added anywhere (the backend's `adds_words`). */
export function addsWords(a: string[], b: string[]): boolean {
  const [short, long] = a.length <= b.length ? [a, b] : [b, a];
  if (short.length < 4 || short.length >= long.length || long.length > 2 * short.length) return false;
  let j = 0;
  for (const w of long) if (j < short.length && w === short[j]) j++;
  return j === short.length;
}

function jaccard(a: Set<string>, b: Set<string>): number {
  let inter = 0;
  for (const x of a) if (b.has(x)) inter++;
  const union = a.size + b.size - inter;
  return union ? inter / union : 1;
}

export function parseRows(text: string): any[] {
  const rows: any[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      rows.push(JSON.parse(line));
    } catch {
      rows.push({ text: line });
    }
  }
  return rows;
}

/** Flags for `rows` (one contribution) against earlier contributions' rows and its own earlier lines. */
export function duplicateFlags(rows: any[], earlier: { id: number; rows: any[] }[], threshold = 0.8): DupFlag[] {
  const seen = new Map<string, { c: number | null; line: number }>();
  const sh: { c: number | null; line: number; s: Set<string>; w: string[] }[] = [];
  for (const e of earlier)
    e.rows.forEach((r, i) => {
      const t = normalisedText(r);
      if (!seen.has(t)) seen.set(t, { c: e.id, line: i + 1 });
      sh.push({ c: e.id, line: i + 1, s: shingles(t), w: wordsOf(t) });
    });
  const flags: DupFlag[] = [];
  rows.forEach((r, i) => {
    const t = normalisedText(r);
    const s = shingles(t);
    const w = wordsOf(t);
    const ex = seen.get(t);
    if (ex) flags.push({ line: i + 1, kind: "exact", of_contribution: ex.c, of_line: ex.line, similarity: 1 });
    else {
      let best: DupFlag | null = null;
      for (const o of sh) {
        const j = jaccard(s, o.s);
        if (j >= threshold && (!best || j > best.similarity)) best = { line: i + 1, kind: "near", of_contribution: o.c, of_line: o.line, similarity: j };
      }
      for (const o of best ? [] : sh) {
        const share = Math.min(w.length, o.w.length) / Math.max(w.length, o.w.length, 1);
        if (addsWords(w, o.w) && (!best || share > best.similarity)) best = { line: i + 1, kind: "near", of_contribution: o.c, of_line: o.line, similarity: share };
      }
      if (best) flags.push(best);
      seen.set(t, { c: null, line: i + 1 });
    }
    sh.push({ c: null, line: i + 1, s, w });
  });
  return flags;
}

export function describeFlag(f: DupFlag): string {
  const where = f.of_contribution === null || f.of_contribution === undefined ? `line ${f.of_line} of the same file` : `contribution #${f.of_contribution}, line ${f.of_line}`;
  return f.kind === "exact" ? `line ${f.line}: exact duplicate of ${where}` : `line ${f.line}: near duplicate (${Math.round(f.similarity * 100)}% similar) of ${where}`;
}
