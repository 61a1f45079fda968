"""The action bundle: one JSON file holding an action, every action beneath it and the model-call
receipts they used — everything `verify action` needs besides the chain and the content store.

    {"format": "provenant.actions/1", "head": "0x<hash of the final action>",
     "actions": [<action receipt JSON>, ...], "model_calls": [<serving receipt JSON>, ...]}

Each action carries the hash it claims (`hash`), so an altered copy is named by the hash its
children know it by.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from provenant.agents.receipts import ActionReceipt, BadActionReceipt
from provenant.serving.receipts import Receipt

FORMAT = "provenant.actions/1"


class BadBundle(ValueError):
    """The bundle file is not readable or not an action bundle."""


@dataclass
class ActionBundle:
    head: str
    actions: dict[str, ActionReceipt]  # declared hash -> receipt as found in the file
    model_calls: dict[str, Receipt]  # call id -> serving receipt

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "head": self.head, "actions": [a.to_json() for a in self.actions.values()],
                "model_calls": [r.to_json() for r in self.model_calls.values()]}

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def build(cls, head: ActionReceipt, actions: Iterable[ActionReceipt], model_calls: Iterable[Receipt]
              ) -> "ActionBundle":
        return cls(head=head.hash, actions={a.hash: a for a in actions},
                   model_calls={r.call_id: r for r in model_calls})

    @classmethod
    def from_json(cls, raw: Any) -> "ActionBundle":
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BadBundle(f"not an action bundle (expected format {FORMAT!r})")
        actions: dict[str, ActionReceipt] = {}
        for i, entry in enumerate(raw.get("actions", [])):
            try:
                receipt = ActionReceipt.from_json(entry)
            except BadActionReceipt as exc:
                raise BadBundle(f"action #{i} in the bundle: {exc}") from None
            declared = str(entry.get("hash", receipt.hash))
            if declared in actions:
                raise BadBundle(f"action hash {declared} appears twice in the bundle")
            actions[declared] = receipt
        calls: dict[str, Receipt] = {}
        for i, entry in enumerate(raw.get("model_calls", [])):
            try:
                receipt_ = Receipt.from_json(entry)
            except (TypeError, ValueError, KeyError) as exc:
                raise BadBundle(f"model-call receipt #{i} in the bundle: {exc}") from None
            if receipt_.call_id in calls and calls[receipt_.call_id] != receipt_:
                raise BadBundle(f"model call {receipt_.call_id} appears twice with different receipts")
            calls[receipt_.call_id] = receipt_
        head = raw.get("head")
        if not isinstance(head, str):
            raise BadBundle("the bundle names no head action")
        return cls(head=head, actions=actions, model_calls=calls)

    @classmethod
    def load(cls, path: Path) -> "ActionBundle":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadBundle(f"action bundle {path} is not readable JSON: {exc}") from None
        return cls.from_json(raw)
