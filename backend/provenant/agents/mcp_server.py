"""Provenant as MCP tools: any MCP-capable agent gets answers with signed receipts, and receipts of its own.

`provenant agent mcp --transport stdio|http` serves these tools (the `mcp` package's MCPServer):

  list_models()                        the registered models: name, id, task, price, lineage root
  call_model(model, prompt, ...)       a paid call (voucher signed by the server's wallet key) ->
                                       the answer, its signed provenance receipt and that receipt's
                                       verification; with an agent configured, also the signed
                                       `model_call` action that records it
  get_receipt(call_id)                 a call's receipt, from the serving API
  verify_receipt(receipt)              `verify receipt`: serving key, lineage root, adapter hash, epoch
  verify_action(bundle)                `verify action`: the DAG, its data ancestry, who is owed what
  record_action(kind, ...)             sign a tool_call / payment / result action through the SDK
  publish_actions(head?)               the agent's bundle (head and everything beneath it), verified
                                       and published under <home>/agents/<id>/ for the web app

Why the server holds the keys: the wallet key pays for model calls, and the operator key signs the
agent's actions; both come from the environment (or a dev account on chain 31337) when the server
starts and are never accepted from a tool argument, so a prompt-injected agent cannot sign as
someone else. Bad input (an unknown model, a malformed receipt or bundle, an unknown call id) is a
tool error naming the problem; nothing is paid or signed for it.
"""

from __future__ import annotations

import hmac
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from provenant.agents.bundle import ActionBundle, BadBundle
from provenant.agents.publish import next_seq, publish_bundle
from provenant.agents.receipts import KINDS, BadActionReceipt, PPM
from provenant.agents.sdk import AgentSession
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.serving.payment_header import payment_header
from provenant.serving.receipts import Receipt
from provenant.serving.wallet import VoucherWallet
from provenant.store.blockstore import ContentStore

CALL_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")
MAX_PROMPT_CHARS = 4_000


@dataclass
class McpContext:
    client: ChainClient
    contracts: Contracts
    store: ContentStore
    home: Path
    serving_url: str
    wallet: LocalAccount | None = None  # pays for model calls
    operator: LocalAccount | None = None  # signs the agent's actions
    agent_id: int | None = None


@dataclass(frozen=True)
class _Model:
    name: str
    model_id: int
    task: str
    price: int
    entry: dict[str, Any]


class ProvenantTools:
    """The tools' logic, plain methods (the MCP layer only registers them); thread-safe, since
    MCPServer runs sync tools in worker threads."""

    def __init__(self, ctx: McpContext, timeout: float = 120.0) -> None:
        self.ctx = ctx
        self.http = httpx.Client(base_url=ctx.serving_url.rstrip("/"), timeout=timeout)
        self.wallet = None if ctx.wallet is None else VoucherWallet(
            ctx.wallet, ctx.client.chain_id, ctx.contracts.escrow.address, clock=ctx.client.latest_timestamp)
        self.session: AgentSession | None = None
        if ctx.operator is not None and ctx.agent_id is not None:
            self.session = AgentSession.open(ctx.client, ctx.contracts, ctx.operator, ctx.agent_id,
                                             first_seq=next_seq(ctx.home, ctx.agent_id))
        self._lock = threading.Lock()  # one voucher raise and one signed action at a time

    # -- models ------------------------------------------------------------------------------
    def _models(self) -> dict[str, _Model]:
        response = self.http.get("/v1/models")
        if response.status_code != 200:
            raise ToolError(f"the serving API at {self.ctx.serving_url} answered {response.status_code} to /v1/models")
        data = response.json()["data"]
        tasks = {e["id"]: e["task"] for e in data if "task" in e}
        return {e["id"]: _Model(e["id"], int(e["model_id"]), tasks.get(e["root"], "causal-lm"),
                                int(e["price_per_call"]), e)
                for e in data if "model_id" in e}

    def list_models(self) -> dict[str, Any]:
        return {"models": [{"name": m.name, "model_id": m.model_id, "task": m.task,
                            "price_per_call": str(m.price), "lineage_root": m.entry["lineage_root"],
                            "base_model": m.entry["root"], "served_here": m.entry.get("served_here", False)}
                           for m in self._models().values()]}

    def call_model(self, model: str, prompt: str, max_tokens: int = 16) -> dict[str, Any]:
        if not prompt or len(prompt) > MAX_PROMPT_CHARS:
            raise ToolError(f"prompt must be 1..{MAX_PROMPT_CHARS} characters")
        if not 1 <= max_tokens <= 256:
            raise ToolError("max_tokens must be between 1 and 256")
        models = self._models()
        m = models.get(model)
        if m is None:
            known = ", ".join(sorted(models)) or "none"
            raise ToolError(f"unknown model {model!r}; the registered models are: {known}")
        if self.wallet is None:
            raise ToolError("this MCP server has no wallet key, so it cannot pay for model calls")
        with self._lock:
            if m.model_id not in self.wallet.cumulative:
                # Start from what the escrow has charged this wallet. Never from what a server says
                # it expects: a dishonest server could name a higher amount and be signed a voucher
                # for calls it never answered. So vouchers a previous process left uncharged must be
                # charged (the server's batch) before a new process pays with the same wallet.
                escrow = self.ctx.contracts.escrow.functions
                self.wallet.cumulative[m.model_id] = int(self.ctx.client.call(
                    escrow.spentOf(self.wallet.consumer.address, m.model_id)))
            voucher, signature = self.wallet.voucher(m.model_id, m.price)
            payment = {"voucher": voucher.to_json(), "signature": "0x" + signature.hex()}
            if m.task == "classification":
                response = self.http.post("/v1/classifications", json={"model": model, "input": prompt,
                                                                        "payment": payment})
            else:
                response = self.http.post("/v1/completions", headers=payment_header(voucher, signature),
                                          json={"model": model, "prompt": prompt, "max_tokens": max_tokens})
            if response.status_code != 200:
                self.wallet.refund(m.model_id, m.price)  # the server accepted nothing: undo the raise
                raise ToolError(f"model {model!r} refused the call ({response.status_code}): "
                                f"{_detail(response)}")
            body = response.json()
            receipt = Receipt.from_json(body["provenance"])
            answer = body["label"] if m.task == "classification" else body["choices"][0]["text"]
            out: dict[str, Any] = {"model": model, "answer": answer, "receipt": receipt.to_json(),
                                   "verification": self._verify_receipt(receipt.to_json())}
            if m.task == "classification":
                out["probabilities"] = body.get("probabilities")
            if self.session is not None:
                action = self.session.add_model_receipt(receipt, prompt, answer)
                action_json = action.to_json()
                action_json["detail"] = {**action_json["detail"], "model": model}
                out["action"] = action_json
        return out

    # -- receipts ----------------------------------------------------------------------------
    def get_receipt(self, call_id: str) -> dict[str, Any]:
        if not CALL_ID.match(call_id):
            raise ToolError(f"call id {call_id!r} is not 0x followed by 64 hex digits")
        response = self.http.get(f"/v1/receipts/{call_id}")
        if response.status_code == 404:
            raise ToolError(f"no receipt for call {call_id} on the serving API at {self.ctx.serving_url}")
        if response.status_code != 200:
            raise ToolError(f"the serving API answered {response.status_code}: {_detail(response)}")
        return {"receipt": response.json()}

    def verify_receipt(self, receipt: dict[str, Any]) -> dict[str, Any]:
        return self._verify_receipt(receipt)

    def _verify_receipt(self, raw: dict[str, Any]) -> dict[str, Any]:
        """`ok` is about the receipt itself (the answer is what the registered model signed, with its
        registered lineage); `settled` says whether its call is in a settled epoch yet, which a fresh
        answer never is (`verify receipt` counts that as a failure; an agent wants both facts apart)."""
        from provenant.serving.models import ModelRecord
        from provenant.serving.receipts import check_receipt
        from provenant.verify import verify_receipt  # loads the serving stack: only when asked

        receipt = _parse_receipt(raw)
        c, contracts = self.ctx.client, self.ctx.contracts
        out: dict[str, Any] = {"subject": f"receipt for call {receipt.call_id}", "checks": [], "reasons": [],
                               "settled": False, "settlement": ""}
        if receipt.chain_id != c.chain_id or receipt.verifying_contract.lower() != contracts.models.address.lower():
            out["reasons"].append(f"receipt is for chain {receipt.chain_id} / registry {receipt.verifying_contract}, "
                                  f"not this deployment ({c.chain_id} / {contracts.models.address})")
        elif not c.call(contracts.models.functions.exists(receipt.model_id)):
            out["reasons"].append(f"model {receipt.model_id} is not registered")
        else:
            record = ModelRecord.fetch(c, contracts, receipt.model_id)
            out["reasons"] = check_receipt(receipt, record.server, record.lineage_root, record.adapter_hash)
            if not out["reasons"]:
                out["checks"].append(f"signed by model {receipt.model_id}'s registered server {record.server}; "
                                     f"lineage root, adapter hash and attribution hash are the registered ones")
                full = verify_receipt(c, contracts, self.ctx.store, raw)
                out["settled"] = full.ok
                out["settlement"] = (full.checks or [""])[-1] if full.ok else "; ".join(full.reasons)
        out["ok"] = not out["reasons"]
        return out

    def verify_action(self, bundle: dict[str, Any]) -> dict[str, Any]:
        from provenant.agents.verify import verify_action

        try:
            parsed = ActionBundle.from_json(bundle)
        except BadBundle as exc:
            raise ToolError(f"malformed action bundle: {exc}") from None
        verdict = verify_action(self.ctx.client, self.ctx.contracts, self.ctx.store, parsed)
        out: dict[str, Any] = {"ok": verdict.ok, "subject": verdict.subject, "checks": verdict.checks,
                               "reasons": verdict.reasons, "actions": len(verdict.actions)}
        if verdict.ancestry is not None:
            a = verdict.ancestry
            out["ancestry"] = {"shares_ppm": a.shares, "unattributed_ppm": a.unattributed,
                               "fees_by_model": {k: str(v) for k, v in a.fees_by_model.items()},
                               "royalty_pool_wei": str(a.pool_wei), "dust_wei": str(a.dust_wei),
                               "owed": [{"role": r.role, "who": r.key, "share_ppm": r.share_ppm,
                                         "amount_wei": str(r.amount_wei)} for r in a.owed]}
        return out

    # -- the agent's own receipts --------------------------------------------------------------
    def _session(self) -> AgentSession:
        if self.session is None:
            raise ToolError("this MCP server runs without an agent (start it with --agent-id and the "
                            "operator key) so it cannot sign actions")
        return self.session

    def record_action(self, kind: str, input: str, output: str, call_ids: list[str] | None = None,
                      parents: list[str] | None = None, tool: str = "", value_moved: str = "0",
                      value_earned: str = "0", royalty_ppm: int = 0) -> dict[str, Any]:
        session = self._session()
        if kind not in KINDS:
            raise ToolError(f"action kind {kind!r} is not one of {', '.join(KINDS)}")
        try:
            moved, earned = int(value_moved), int(value_earned)
        except ValueError:
            raise ToolError("value_moved and value_earned must be integers of token wei") from None
        if moved < 0 or earned < 0 or not 0 <= royalty_ppm <= PPM:
            raise ToolError(f"values must be >= 0 and royalty_ppm within 0..{PPM}")
        with self._lock:
            known = {a.hash for a in session.actions}
            for p in parents or []:
                if p not in known:
                    raise ToolError(f"parent {p} is not an action this agent signed in this session")
            receipts = []
            for call_id in call_ids or []:
                receipt = session.model_calls.get(call_id)
                if receipt is None:
                    receipt = _parse_receipt(self.get_receipt(call_id)["receipt"])
                receipts.append(receipt)
            try:
                action = session.record(kind, input, output, model_receipts=receipts, parents=parents,
                                        value_moved=moved, value_earned=earned, royalty_ppm=royalty_ppm,
                                        detail={"tool": tool} if tool else None)
            except BadActionReceipt as exc:
                raise ToolError(str(exc)) from None
        return {"action": action.to_json()}

    def publish_actions(self, head: str | None = None) -> dict[str, Any]:
        session = self._session()
        with self._lock:
            if not session.actions:
                raise ToolError("the agent has signed no action yet")
            by_hash = {a.hash: a for a in session.actions}
            if head is not None and head not in by_hash:
                raise ToolError(f"action {head} is not one this agent signed in this session")
            bundle = session.bundle(by_hash[head] if head else None)
        verdict = self.verify_action(bundle.to_json())
        if not verdict["ok"]:
            raise ToolError(f"the bundle does not verify, so it was not published: {verdict['reasons'][0]}")
        path = publish_bundle(self.ctx.home, bundle)
        return {"head": bundle.head, "path": str(path), "bundle": bundle.to_json(), "verification": verdict}


def _parse_receipt(raw: Any) -> Receipt:
    """A serving receipt from JSON, or a tool error naming what is wrong with it."""
    if not isinstance(raw, dict):
        raise ToolError("malformed receipt: expected a JSON object")
    try:
        receipt = Receipt.from_json(raw)
        receipt.message()  # every hash field decodes
        if not isinstance(receipt.attribution, dict) or not CALL_ID.match(receipt.call_id):
            raise ValueError("call_id or attribution has the wrong shape")
    except (TypeError, ValueError, KeyError) as exc:
        raise ToolError(f"malformed receipt: {exc}") from None
    return receipt


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail", body.get("error", body)) if isinstance(body, dict) else body
    return str(detail)[:300]


class StaticBearer:
    """The MCP SDK's TokenVerifier for one shared secret: over HTTP, `call_model` spends this server's
    wallet and `record_action` signs as its agent, so every request must carry `Authorization: Bearer
    <token>` (compared in constant time; the SDK answers 401 with WWW-Authenticate otherwise)."""

    def __init__(self, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the MCP bearer token must be at least 16 characters")
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        return AccessToken(token="<redacted>", client_id="provenant-mcp", scopes=[])


def build_server(tools: ProvenantTools, bearer_token: str | None = None,
                 public_url: str = "http://127.0.0.1:8765/mcp") -> MCPServer:
    """An MCPServer whose tools are `tools`' methods (their docstrings below are what agents read).
    With `bearer_token`, every HTTP request must present it (stdio needs none: its caller owns the process)."""
    auth = {} if bearer_token is None else {
        "auth": AuthSettings(issuer_url=public_url.rsplit("/", 1)[0], resource_server_url=public_url),
        "token_verifier": StaticBearer(bearer_token)}
    server: MCPServer = MCPServer(
        name="provenant", version="0.1.0", **auth,
        instructions="Provenant models answer with signed receipts of the data behind each answer. Call a "
                     "model, keep its receipt, verify receipts and action bundles; an agent configured on this "
                     "server gets a signed action receipt for every model call and for actions it records.")

    @server.tool()
    def list_models() -> dict[str, Any]:
        """The models registered on chain: name, model id, task (causal-lm or classification), price per
        call in token wei, lineage root."""
        return tools.list_models()

    @server.tool()
    def call_model(model: str, prompt: str, max_tokens: int = 16) -> dict[str, Any]:
        """Call a Provenant model by name (paid by this server's wallet). Returns the answer, its signed
        provenance receipt (model, lineage root, top contributions, contributors and Datanets with shares),
        the receipt's verification, and the agent's signed model_call action when an agent is configured."""
        return tools.call_model(model, prompt, max_tokens)

    @server.tool()
    def get_receipt(call_id: str) -> dict[str, Any]:
        """The signed receipt of a model call, by call id (0x + 64 hex)."""
        return tools.get_receipt(call_id)

    @server.tool()
    def verify_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
        """Verify a model-call receipt against the chain: signed by the model's registered serving key,
        registered lineage root and adapter hash, attribution hash, and the settled epoch if any."""
        return tools.verify_receipt(receipt)

    @server.tool()
    def verify_action(bundle: dict[str, Any]) -> dict[str, Any]:
        """Verify an action bundle (provenant.actions/1): every action's signature by its agent's registered
        operator, the parent links, the model-call receipts beneath; returns the data ancestry and who is
        owed what from the action's royalty, or the first broken link."""
        return tools.verify_action(bundle)

    @server.tool()
    def record_action(kind: str, input: str, output: str, call_ids: list[str] | None = None,
                      parents: list[str] | None = None, tool: str = "", value_moved: str = "0",
                      value_earned: str = "0", royalty_ppm: int = 0) -> dict[str, Any]:
        """Sign one of the agent's actions (kind: tool_call, model_call, payment or result) over its input and
        output (hashed), the model calls it relied on (call ids), its parent actions (default: the previous
        action), the value it moved or earned (token wei, as decimal strings) and the royalty share (ppm) it
        routes back to the data beneath it."""
        return tools.record_action(kind, input, output, call_ids, parents, tool, value_moved, value_earned,
                                   royalty_ppm)

    @server.tool()
    def publish_actions(head: str | None = None) -> dict[str, Any]:
        """Bundle the agent's action `head` (default: its latest) with everything beneath it, verify it, and
        publish it where the web app and auditors read it; returns the bundle and its verification."""
        return tools.publish_actions(head)

    return server


def serve(tools: ProvenantTools, transport: str, host: str = "127.0.0.1", port: int = 8765,
          bearer_token: str | None = None) -> None:
    if transport == "stdio":
        build_server(tools).run("stdio")
    elif transport == "http":
        if not bearer_token:
            raise ValueError("the HTTP transport needs a bearer token: its tools spend this server's wallet")
        server = build_server(tools, bearer_token, public_url=f"http://{host}:{port}/mcp")
        server.run("streamable-http", host=host, port=port, streamable_http_path="/mcp")
    else:
        raise ValueError(f"transport {transport!r} is not stdio or http")
