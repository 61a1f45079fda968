"""An attributor as a separate process with its own key, spoken to in JSON lines over stdio.

`provenant attributor-worker` (or `python -m provenant.settlement.worker`) starts one; it prints
`{"ready": true, "address": ...}` once its key is checked against the chain (or
`{"ready": false, "error": ...}` and exits 1: unregistered key, missing key, dead RPC), then
answers one JSON request per line: propose, cosign, post, preload. Its log (refusals with the
first differing call and account) goes to stderr. `ProcessPeer` is the client side, a `Peer`
for settle_with_quorum.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Callable

from provenant.settlement.attestation import Cosignature, Refusal, SignedProposal, answer_from_json


class WorkerError(RuntimeError):
    pass


def handle(attributor: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One request to an in-process Attributor; the answer is JSON-able."""
    from provenant.settlement.quorum import post_settlement

    op = request.get("op")
    if op == "propose":
        proposal = attributor.propose(int(request["model_id"]), upto_seq=request.get("upto_seq"),
                                      valid_for=int(request.get("valid_for", 3600)))
        return {"proposal": proposal.signed.to_json()}
    if op == "cosign":
        return {"answer": attributor.cosign(SignedProposal.from_json(request["proposal"])).to_json()}
    if op == "post":
        signatures = {a: bytes.fromhex(s.removeprefix("0x")) for a, s in request["signatures"].items()}
        tx = post_settlement(attributor.client, attributor.contracts, attributor.key,
                             SignedProposal.from_json(request["proposal"]), signatures)
        return {"tx_hash": tx}
    if op == "preload":
        for model_id in request.get("model_ids", []):
            attributor._model(int(model_id))  # noqa: SLF001 - warm the model before the first epoch
        return {}
    raise ValueError(f"unknown op {op!r}")


def serve(make_attributor: Callable[[], Any], stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout) -> int:
    def say(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    try:
        attributor = make_attributor()
    except Exception as exc:  # noqa: BLE001 - the process's contract is one readable line
        say({"ready": False, "error": str(exc)})
        logging.getLogger("provenant.settlement").error("attributor refuses to start: %s", exc)
        return 1
    say({"ready": True, "address": attributor.address})
    for line in stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("op") == "exit":
            break
        try:
            say({"ok": True, **handle(attributor, request)})
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the worker lives on
            logging.getLogger("provenant.settlement").exception("request %s failed", request.get("op"))
            say({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return 0


def make_attributor(rpc_url: str, home: Path, calls: Path, key_env: str) -> Any:
    """Connect (retrying), load the deployment, the key (from an env variable) and the call log."""
    from provenant.chain.keys import account_from_env

    key = account_from_env(key_env)  # first, and before the heavy imports: a missing key is named at once
    from provenant.chain.deploy import Contracts
    from provenant.settlement.roles import require_registered
    from provenant.settlement.rpc import connect

    client = connect(rpc_url)
    contracts = Contracts.load(client, home)
    client.check_signer(key)
    require_registered(client, contracts, key.address)  # still before torch: a wrong key refuses in a second
    from provenant.serving.calllog import CallLog
    from provenant.settlement.attributor import Attributor
    from provenant.store import open_store

    store = open_store(os.environ.get("PROVENANT_STORE", str(home / "store")))
    return Attributor(client, contracts, store, key, CallLog(calls))


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class ProcessPeer:
    """A Peer that is another process: `command` starts a worker whose key is in `env`."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - owned by this peer until close()
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log, text=True)
        self._address: str | None = None

    def wait_ready(self) -> str:
        hello = self._read()
        if not hello.get("ready"):
            self.close()
            raise WorkerError(f"attributor process refused to start: {hello.get('error')}")
        self._address = str(hello["address"])
        return self._address

    @property
    def address(self) -> str:
        return self._address or self.wait_ready()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise WorkerError(f"attributor process exited ({self.process.returncode}): {' | '.join(tail)}")
        return json.loads(line)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.address  # noqa: B018 - the ready line comes first
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if not answer.get("ok"):
            raise WorkerError(f"attributor {self._address} failed {op}: {answer.get('error')}")
        return answer

    def propose(self, model_id: int, upto_seq: int | None = None) -> SignedProposal:
        return SignedProposal.from_json(self.request("propose", model_id=model_id, upto_seq=upto_seq)["proposal"])

    def cosign(self, proposal: SignedProposal) -> Cosignature | Refusal:
        return answer_from_json(self.request("cosign", proposal=proposal.to_json())["answer"])

    def post(self, proposal: SignedProposal, signatures: dict[str, bytes]) -> str:
        sigs = {a: "0x" + s.hex() for a, s in signatures.items()}
        return str(self.request("post", proposal=proposal.to_json(), signatures=sigs)["tx_hash"])

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                # It holds nothing that needs flushing (state is on chain and in the store), and
                # interpreter teardown with torch loaded can take seconds on a busy machine.
                self.process.terminate()
                self.process.wait()
        self._log.close()

    def kill(self) -> None:
        """Stop abruptly (tests: a settlement process dying mid-epoch)."""
        self.process.kill()
        self.process.wait()
        self._log.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="an attributor process speaking JSON lines on stdio")
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--calls", type=Path, required=True, help="this attributor's copy of the call log")
    parser.add_argument("--key-env", default="PROVENANT_KEY")
    args = parser.parse_args(argv)
    configure_logging()
    return serve(lambda: make_attributor(args.rpc_url, args.home, args.calls, args.key_env))


if __name__ == "__main__":
    sys.exit(main())
