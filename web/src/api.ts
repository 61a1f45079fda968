// The backend's HTTP API (one FastAPI process: config, SIWE auth, uploads, the index, serving, claims).
// Routes that a given server may not mount yet are found from its /openapi.json first, so the app
// never asks for a route that is not there (no 404s in the console) and can say what is missing.

export type Config = {
  chain_id: number;
  domain: string;
  contracts: { token: `0x${string}`; datanets: `0x${string}`; models: `0x${string}`; escrow: `0x${string}`; settlement: `0x${string}` };
  deployment_block?: number;
};

export class ApiError extends Error {
  constructor(public status: number, message: string, public body: any) {
    super(message);
  }
}

const TOKEN_KEY = "provenant.session";

export type SessionInfo = { token: string; address: string; expires_at: number };

export function storedSession(): SessionInfo | null {
  try {
    const raw = sessionStorage.getItem(TOKEN_KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as SessionInfo;
    return s.expires_at * 1000 > Date.now() ? s : null;
  } catch {
    return null;
  }
}

export function storeSession(s: SessionInfo | null) {
  if (s) sessionStorage.setItem(TOKEN_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** One pydantic validation error as "field.path: message" ("body" dropped), so a form can say which field. */
function validationMessage(x: any): string {
  if (!x || typeof x.msg !== "string") return JSON.stringify(x);
  const where = Array.isArray(x.loc) ? x.loc.filter((p: unknown, i: number) => !(i === 0 && p === "body")).join(".") : "";
  return where ? `${where}: ${x.msg}` : x.msg;
}

function detailMessage(body: any, status: number): string {
  const d = body?.detail ?? body?.error ?? body;
  if (typeof d === "string") return d;
  if (d && typeof d.message === "string") return d.message;
  if (Array.isArray(d)) return d.map(validationMessage).join("; ");
  return `HTTP ${status}`;
}

export async function request<T = any>(path: string, init: RequestInit & { auth?: boolean; raw?: boolean } = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (init.auth) {
    const s = storedSession();
    if (!s) throw new ApiError(401, "sign in with Ethereum first", null);
    headers.set("Authorization", `Bearer ${s.token}`);
  }
  if (init.body && typeof init.body === "string" && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  const res = await fetch(path, { ...init, headers });
  const text = await res.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (!res.ok) {
    if (res.status === 401 && init.auth) storeSession(null);
    throw new ApiError(res.status, detailMessage(body, res.status), body);
  }
  return (init.raw ? text : body) as T;
}

let routes: Promise<Set<string>> | null = null;

/** The paths this server mounts (from its OpenAPI document), e.g. "/v1/claims/{account}". */
export function serverRoutes(): Promise<Set<string>> {
  if (!routes) {
    routes = fetch("/openapi.json")
      .then((r) => (r.ok ? r.json() : { paths: {} }))
      .then((doc) => new Set(Object.keys(doc.paths ?? {})))
      .catch(() => new Set<string>());
  }
  return routes;
}

export async function hasRoute(path: string): Promise<boolean> {
  return (await serverRoutes()).has(path);
}

let config: Promise<Config> | null = null;
export function getConfig(): Promise<Config> {
  if (!config) config = request<Config>("/v1/config");
  return config;
}

export type Page<T> = { items: T[]; total: number; limit: number; offset: number };

export type DatanetRow = {
  datanet_id: number; owner: string; metadata_cid: string; license: string; treasury: string; stake: string | number;
  allowlisted: boolean; slash_on_reject: boolean; version: number; tx_hash: string;
  curators?: string[]; contributions_by_status?: Record<string, number>; used_by_models?: number[];
};

export type ContributionRow = {
  contribution_id: number; datanet_id: number; contributor: string; content_hash: string; cid: string;
  size: number; row_count: number; stake: string | number; status: string; reject_reason?: number | null; tx_hash?: string;
};

export type ModelRow = {
  model_id: number; owner: string; parent_id: number; name: string; lineage_root: string; adapter_hash: string;
  base_model?: string; config_hash?: string; adapter_cid?: string; manifest_cid?: string;
  price_per_call?: string | number; server?: string;
};

export type ModelDetail = ModelRow & {
  lineage: { parent_id: number | null; children: number[]; datanet_ids: number[]; contributions: ContributionRow[] };
  fees: Record<string, string>;
  epochs: { epoch: number; upto_seq: number; payout_root: string; claim_cap: string; results_cid: string; fee_total: string; carried_dust: string }[];
};

export const index = {
  datanets: (q = "") => request<Page<DatanetRow>>(`/v1/index/datanets?limit=500${q}`),
  datanet: (id: number) => request<DatanetRow>(`/v1/index/datanets/${id}`),
  contributions: (q: string) => request<Page<ContributionRow>>(`/v1/index/contributions?limit=500&${q}`),
  models: (q = "") => request<Page<ModelRow>>(`/v1/index/models?limit=500${q}`),
  model: (id: number) => request<ModelDetail>(`/v1/index/models/${id}`),
  earnings: (a: string) => request<any>(`/v1/index/accounts/${a}/earnings`),
  health: () => request<any>(`/v1/index/health`),
};

/** A Datanet's metadata (name, description, task, labels, limits), where the server exposes it. */
export async function datanetMetadata(d: { datanet_id: number; metadata_cid: string }): Promise<Record<string, any> | null> {
  try {
    if (await hasRoute("/v1/datanets/{datanet_id}")) {
      const r = await request<any>(`/v1/datanets/${d.datanet_id}`);
      return r.metadata ?? r;
    }
    if (await hasRoute("/v1/content/{cid}")) return await request<any>(`/v1/content/${d.metadata_cid}`);
  } catch {
    /* shown as "metadata not available" */
  }
  return null;
}

export function datanetName(d: { datanet_id: number }, meta: Record<string, any> | null | undefined): string {
  return (meta && typeof meta.name === "string" && meta.name) || `Datanet ${d.datanet_id}`;
}
