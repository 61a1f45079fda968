"""Where an agent publishes its action bundles, so that others (the web app, auditors) can read them.

    <home>/agents/<agent id>/<head action hash>.json     one action bundle (provenant.actions/1)

A bundle is published under the agent of its head action. Publishing is idempotent (the file is
named by the head's hash and written atomically); nothing here is trusted: readers verify every
bundle with `verify action` before showing what it claims. The highest sequence number published
tells a restarted agent (the MCP server, the demo) where to continue, so that it never signs two
actions with the same (agent, seq), which `verify action` refuses as a replay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from provenant.agents.bundle import ActionBundle, BadBundle


class PublishError(ValueError):
    """The bundle cannot be published (its head is not in it)."""


def agent_dir(home: Path, agent_id: int) -> Path:
    return Path(home) / "agents" / str(int(agent_id))


def publish_bundle(home: Path, bundle: ActionBundle) -> Path:
    head = bundle.actions.get(bundle.head)
    if head is None:
        raise PublishError(f"the bundle's head action {bundle.head} is not in the bundle")
    folder = agent_dir(home, head.agent_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bundle.head}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(bundle.to_json(), indent=1))
    os.replace(tmp, path)
    return path


def published_bundles(home: Path, agent_id: int) -> list[tuple[Path, ActionBundle | BadBundle]]:
    """Every bundle file of the agent, oldest first, each parsed or with the reason it is unreadable."""
    folder = agent_dir(home, agent_id)
    if not folder.is_dir():
        return []
    out: list[tuple[Path, ActionBundle | BadBundle]] = []
    for path in sorted(folder.glob("0x*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        try:
            out.append((path, ActionBundle.load(path)))
        except BadBundle as exc:
            out.append((path, exc))
    return out


def next_seq(home: Path, agent_id: int) -> int:
    """One more than the highest sequence number the agent has published (1 when none)."""
    seqs = [a.seq for _, b in published_bundles(home, agent_id) if isinstance(b, ActionBundle)
            for a in b.actions.values() if a.agent_id == agent_id]
    return max(seqs, default=0) + 1
