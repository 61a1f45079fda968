"""The call log: what the server answered, for the attributors who settle the epoch.

It holds prompts and salts, so it goes only to registered attributors; receipts and public
epoch results carry salted hashes instead. One JSON line per call, appended and fsynced before
the answer is returned, so a crash never loses a call that a consumer holds a receipt for.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path


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


class CallLog:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, model_id: int) -> Path:
        return self.directory / f"model-{model_id}.jsonl"

    def append(self, record: CallRecord) -> None:
        line = json.dumps({**asdict(record), "fee": str(record.fee)}, sort_keys=True) + "\n"
        with self._lock, open(self._path(record.model_id), "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, model_id: int) -> list[CallRecord]:
        path = self._path(model_id)
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                raw = json.loads(line)
                records.append(CallRecord(**{**raw, "fee": int(raw["fee"])}))
        # One record per call id, however often a line was written (idempotent readers).
        unique = {r.call_id: r for r in records}
        return sorted(unique.values(), key=lambda r: (r.timestamp, r.call_id))
