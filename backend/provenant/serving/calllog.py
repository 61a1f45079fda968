"""The call log: what the server answered, for the attributors who settle the epoch.

It holds prompts and salts, so it goes only to registered attributors; receipts and public
epoch results carry salted hashes instead. One JSON line per call, appended and fsynced before
the answer is returned, so a crash never loses a call that a consumer holds a receipt for.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("provenant.serving")


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    model_id: int
    consumer: str
    fee: int
    prompt: str
    salt: str
    output: str
    timestamp: int
    # The consumer's cumulative voucher amount that paid for this call (the escrow's Charged
    # event carries the same figure), which ties the call to the charge that paid for it and so
    # to exactly one epoch. None in logs written before the field existed; settlement then
    # derives it as the running sum of the consumer's fees in log order.
    cumulative: int | None = None


class CallLog:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, model_id: int) -> Path:
        return self.directory / f"model-{model_id}.jsonl"

    def append(self, record: CallRecord) -> None:
        raw = {**asdict(record), "fee": str(record.fee)}
        if record.cumulative is None:
            del raw["cumulative"]  # keep old-format lines byte-identical
        else:
            raw["cumulative"] = str(record.cumulative)
        line = (json.dumps(raw, sort_keys=True) + "\n").encode("utf-8")
        with self._lock, open(self._path(record.model_id), "ab+") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end > 0:
                handle.seek(end - 1)
                if handle.read(1) != b"\n":
                    line = b"\n" + line  # after a line torn by a crash: start a fresh one
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, model_id: int) -> list[CallRecord]:
        # One record per call id, however often a line was written (idempotent readers).
        unique = {r.call_id: r for r in self._lines(model_id)}
        return sorted(unique.values(), key=lambda r: (r.timestamp, r.call_id))

    def read_in_order(self, model_id: int) -> list[CallRecord]:
        """One record per call id (its first line), in the order the calls were logged; settlement
        needs log order to derive cumulative amounts that old-format lines do not carry."""
        seen: dict[str, CallRecord] = {}
        for record in self._lines(model_id):
            seen.setdefault(record.call_id, record)
        return list(seen.values())

    def _lines(self, model_id: int) -> list[CallRecord]:
        path = self._path(model_id)
        if not path.exists():
            return []
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                # Torn by a crash mid-append: that call was never answered (the line is fsynced
                # before the answer). Every reader skips the same bytes, so attributors agree.
                log.warning("call log %s line %d is not JSON (torn write?); skipped", path, number)
                continue
            cumulative = raw.pop("cumulative", None)
            records.append(CallRecord(**{**raw, "fee": int(raw["fee"]),
                                         "cumulative": None if cumulative is None else int(cumulative)}))
        return records
