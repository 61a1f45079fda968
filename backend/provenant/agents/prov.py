"""W3C PROV-JSON export of an action's history, so standard provenance tools can read it.

Mapping (PROV-DM):
  entities    contributions, Datanets (collections of their contributions), models, answers (one
              per model call) and actions (one per signed action receipt)
  activities  training (one per model), inference (one per model call), acts (one per action)
  agents      contributors, builders (model owners), serving keys, the agent itself and its owner
  relations   training used its contributions, generated the model, was associated with the
              builder; inference used the model, generated the answer, was associated with the
              server; each answer was influenced by the contributions its receipt credits (with the
              share in ppm); each act used the answers it relied on and was informed by its parent
              acts; each action entity was derived from its parents' and attributed to the agent,
              which acted on behalf of its owner; contributions were attributed to their contributors
              and are members of their Datanets.
Only a bundle that `verify action` accepts is exported; the export adds facts read from the chain
(lineages, contributors), never from the bundle alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from provenant.agents.bundle import ActionBundle
from provenant.agents.registry import agent_info
from provenant.agents.verify import verify_action
from provenant.chain.bindings import ContributionView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.store.blockstore import ContentStore

NAMESPACE = "urn:provenant:"


class ExportRefused(ValueError):
    """The bundle did not verify, so its history is not exported."""


class _Doc:
    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {}
        self._seen: set[tuple[str, ...]] = set()

    def node(self, kind: str, ident: str, **attrs: Any) -> str:
        section = self.sections.setdefault(kind, {})
        section.setdefault(ident, {}).update({k: v for k, v in attrs.items() if v is not None})
        return ident

    def relation(self, kind: str, **roles: Any) -> None:
        """Add a relation once (an agent acting for its owner in 12 actions is one delegation)."""
        key = (kind, *sorted(f"{k}={v}" for k, v in roles.items()))
        if key in self._seen:
            return
        self._seen.add(key)
        section = self.sections.setdefault(kind, {})
        section[f"_:{kind}{len(self._seen)}"] = {k.replace("__", ":"): v for k, v in roles.items()}

    def to_json(self) -> dict[str, Any]:
        return {"prefix": {"pv": NAMESPACE, "xsd": "http://www.w3.org/2001/XMLSchema#"}, **self.sections}


def _time(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


def _q(name: str) -> dict[str, str]:
    """A qualified-name value (PROV-JSON types prov:type values this way)."""
    return {"$": name, "type": "prov:QUALIFIED_NAME"}


def _int(value: int) -> dict[str, str]:
    return {"$": str(value), "type": "xsd:integer"}


def export_prov(client: ChainClient, contracts: Contracts, store: ContentStore, bundle: ActionBundle) -> dict[str, Any]:
    verdict = verify_action(client, contracts, store, bundle)
    if not verdict.ok:
        raise ExportRefused(f"not exported: {verdict.reasons[0]}")
    doc = _Doc()
    calls = {c: bundle.model_calls[c] for a in verdict.actions for c in a.model_call_ids}
    for model_id in sorted({r.model_id for r in calls.values()}):
        _model(doc, client, contracts, model_id)
    for call_id, r in calls.items():
        answer, inference = f"pv:answer_{call_id}", f"pv:inference_{call_id}"
        doc.node("entity", answer, **{"prov:type": _q("pv:Answer"), "pv:outputHash": r.output_hash,
                                      "pv:attributionHash": r.attribution_hash, "pv:fee": _int(r.fee)})
        doc.node("activity", inference, **{"prov:type": _q("pv:Inference"), "prov:startTime": _time(r.timestamp),
                                           "prov:endTime": _time(r.timestamp)})
        server = doc.node("agent", f"pv:account_{r.signer.lower()}", **{"prov:type": _q("prov:SoftwareAgent")})
        doc.relation("used", prov__activity=inference, prov__entity=f"pv:model_{r.model_id}")
        doc.relation("wasGeneratedBy", prov__entity=answer, prov__activity=inference)
        doc.relation("wasAssociatedWith", prov__activity=inference, prov__agent=server)
        for row in r.attribution.get("contributions", []):
            doc.relation("wasInfluencedBy", prov__influencee=answer, prov__influencer=f"pv:contribution_{row['id']}",
                         **{"pv:sharePpm": _int(int(row["share_ppm"]))})
    for action in verdict.actions:
        info = agent_info(client, contracts, action.agent_id)
        agent = doc.node("agent", f"pv:agent_{action.agent_id}", **{"prov:type": _q("prov:SoftwareAgent"),
                                                                     "pv:agentURI": info.agent_uri})
        owner = doc.node("agent", f"pv:account_{info.owner.lower()}", **{"prov:type": _q("prov:Person")})
        doc.relation("actedOnBehalfOf", prov__delegate=agent, prov__responsible=owner)
        entity, act = f"pv:action_{action.hash}", f"pv:act_{action.hash}"
        doc.node("entity", entity, **{"prov:type": _q("pv:ActionReceipt"), "pv:kind": action.kind,
                                      "pv:seq": _int(action.seq), "pv:inputHash": action.input_hash,
                                      "pv:outputHash": action.output_hash, "pv:valueMoved": _int(action.value_moved),
                                      "pv:valueEarned": _int(action.value_earned),
                                      "pv:royaltyPpm": _int(action.royalty_ppm), "pv:signature": action.signature})
        doc.node("activity", act, **{"prov:type": _q(f"pv:{action.kind}"), "prov:startTime": _time(action.timestamp),
                                     "prov:endTime": _time(action.timestamp)})
        doc.relation("wasGeneratedBy", prov__entity=entity, prov__activity=act)
        doc.relation("wasAssociatedWith", prov__activity=act, prov__agent=agent)
        doc.relation("wasAttributedTo", prov__entity=entity, prov__agent=agent)
        for call_id in action.model_call_ids:
            doc.relation("used", prov__activity=act, prov__entity=f"pv:answer_{call_id}")
        for parent in action.parents:
            doc.relation("wasInformedBy", prov__informed=act, prov__informant=f"pv:act_{parent}")
            doc.relation("wasDerivedFrom", prov__generatedEntity=entity, prov__usedEntity=f"pv:action_{parent}")
    return doc.to_json()


def _model(doc: _Doc, client: ChainClient, contracts: Contracts, model_id: int) -> None:
    from provenant.chain.bindings import ModelView

    record = decode(ModelView, client.call(contracts.models.functions.getModel(model_id)))
    logs = contracts.models.events.ModelLineage.get_logs(from_block=contracts.manifest.block_number,
                                                         argument_filters={"modelId": model_id})
    args = logs[0]["args"] if logs else {"contributionIds": [], "baseModel": record.base_model}
    model, training = f"pv:model_{model_id}", f"pv:training_{model_id}"
    builder = doc.node("agent", f"pv:account_{record.owner.lower()}", **{"prov:type": _q("prov:Person")})
    doc.node("entity", model, **{"prov:type": _q("pv:Model"), "pv:name": record.name, "pv:baseModel": record.base_model,
                                 "pv:lineageRoot": record.lineage_root, "pv:adapterHash": record.adapter_hash,
                                 "pv:adapterCid": record.adapter_cid})
    doc.node("activity", training, **{"prov:type": _q("pv:Training"), "pv:configHash": record.config_hash})
    doc.relation("wasGeneratedBy", prov__entity=model, prov__activity=training)
    doc.relation("wasAssociatedWith", prov__activity=training, prov__agent=builder)
    doc.relation("wasAttributedTo", prov__entity=model, prov__agent=builder)
    for cid in args["contributionIds"]:
        c = decode(ContributionView, client.call(contracts.datanets.functions.getContribution(int(cid))))
        contribution, datanet = f"pv:contribution_{int(cid)}", f"pv:datanet_{c.datanet_id}"
        contributor = doc.node("agent", f"pv:account_{c.contributor.lower()}", **{"prov:type": _q("prov:Person")})
        doc.node("entity", contribution, **{"prov:type": _q("pv:Contribution"), "pv:contentHash": c.content_hash,
                                            "pv:cid": c.cid, "pv:rows": _int(c.row_count)})
        doc.node("entity", datanet, **{"prov:type": _q("prov:Collection")})
        doc.relation("hadMember", prov__collection=datanet, prov__entity=contribution)
        doc.relation("wasAttributedTo", prov__entity=contribution, prov__agent=contributor)
        doc.relation("used", prov__activity=training, prov__entity=contribution)
