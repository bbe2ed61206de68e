"""The plan: the JSON planning model a draft holds and the UI edits (DOMAIN.md §4).

The plan mirrors the spec key tree field for field (``plan.single_ring.stages[2]
.depends_on[0]`` is spec key ``single_ring.stages.2.depends_on.0``), so one
dotted path names a finding in both, and lowering is a walk.

The structs are deliberately lenient about *values*: enumerations and bounds
are strings and integers here, and the validator (``domain.spec.validate``)
reports each broken rule with its own stable code. Only shape is checked when
a JSON plan is decoded (types, unknown fields, int64 range), as ``plan_invalid``.
The JSON schema still lists the allowed values (``enum``, ``minimum``) so an
editor can offer them; the validator is the authority.

Only the section of the plan's target may be present (``single_ring`` for
``SingleRing``, ``lane_graph`` for ``LaneGraph``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

__all__ = [
    "LANE_KINDS",
    "ON_FULL",
    "ORDERINGS",
    "ROLES",
    "TARGETS",
    "Lane",
    "LaneGraph",
    "LaneGraphStage",
    "Pipeline",
    "Plan",
    "SingleRing",
    "SingleRingStage",
    "plan_json_schema",
]

TARGETS: Final = ("SingleRing", "LaneGraph")
ORDERINGS: Final = ("strict", "per_key")
PRODUCERS: Final = ("single",)
SCHEDULINGS: Final = ("dedicated",)
LANE_KINDS: Final = ("Events", "Journal", "SequencedSlots", "FanoutBroadcast")
ON_FULL: Final = ("Block", "Drop")
ROLES: Final = ("stage", "bridge", "router", "merge")

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


def _enum(values: tuple[str, ...], description: str) -> msgspec.Meta:
    return msgspec.Meta(description=description, extra_json_schema={"enum": list(values)})


StageKey = Annotated[
    str,
    msgspec.Meta(
        description=(
            "dataguard_check | dataguard_redact | dataguard_fused | "
            "http_post:<http(s) URL> | exec:<program>|<arg>|... | a plain identifier"
        ),
        examples=["dataguard_check", "http_post:https://example.com/hook", "exec:/bin/tee|-a"],
    ),
]
LaneName = Annotated[
    str,
    msgspec.Meta(description="1..64 characters of [A-Za-z0-9_.-]", examples=["events"]),
]


class Pipeline(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[
        str, msgspec.Meta(description="1..100 characters, no control characters or outer spaces")
    ]
    target: Annotated[str, _enum(TARGETS, "execution target")]


class SingleRingStage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: StageKey
    depends_on: Annotated[
        tuple[Int64, ...],
        msgspec.Meta(description="earlier stage indices, strictly increasing"),
    ] = ()


class SingleRing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    shards: Annotated[
        int, msgspec.Meta(le=2**63 - 1, description=">= 1", extra_json_schema={"minimum": 1})
    ]
    ordering: Annotated[str, _enum(ORDERINGS, "strict needs shards = 1; per_key needs shard_key")]
    shard_key: str | None = None
    producer: Annotated[str, _enum(PRODUCERS, "producer model")] = "single"
    scheduling: Annotated[str, _enum(SCHEDULINGS, "scheduling model")] = "dedicated"
    stages: Annotated[
        tuple[SingleRingStage, ...],
        msgspec.Meta(description="1 to 4 stages", extra_json_schema={"minItems": 1, "maxItems": 4}),
    ] = ()


class Lane(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: LaneName
    kind: Annotated[str, _enum(LANE_KINDS, "lane kind")]
    on_full: Annotated[str, _enum(ON_FULL, "what a full lane does")]


class LaneGraphStage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: LaneName
    key: StageKey
    role: Annotated[str, _enum(ROLES, "stage role")]
    inputs: tuple[LaneName, ...] = ()
    outputs: tuple[LaneName, ...] = ()


class LaneGraph(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    lanes: tuple[Lane, ...] = ()
    stages: tuple[LaneGraphStage, ...] = ()
    ingress: Annotated[
        tuple[LaneName, ...], msgspec.Meta(description="lanes fed from outside")
    ] = ()
    egress: Annotated[
        tuple[LaneName, ...], msgspec.Meta(description="lanes read from outside")
    ] = ()


class Plan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A draft's plan. Exactly the section named by ``pipeline.target`` is set."""

    pipeline: Pipeline
    single_ring: SingleRing | None = None
    lane_graph: LaneGraph | None = None


def plan_json_schema() -> dict[str, Any]:
    """The JSON schema of ``Plan`` (``$defs`` + ``$ref``), for building an editor."""
    schema: dict[str, Any] = msgspec.json.schema(Plan)
    return schema
