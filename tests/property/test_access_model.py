# The table below is DOMAIN.md §3 verbatim, en dashes included.
# ruff: noqa: RUF001, RUF002
"""``domain.access.decide`` against an independent reference model of DOMAIN.md §3.

The model shares nothing with the code under test:

- its permission table is the markdown table of DOMAIN.md §3, pasted below and
  parsed into a truth table ``{(permission, role): bool}``;
- its resolution rules are data: an ordered list of ``(verdict, reason,
  condition)`` whose conditions are small s-expressions, run by a tiny
  interpreter over plain facts (small integers for ids, strings for roles).
  The first rule whose condition holds gives the answer.

Requests are plain data drawn from hand-written strategies over a few ids, so
that memberships, paths and environment lists often meet (same org, a listed
environment, a project with a grant) as well as miss. Each request is turned
into domain values for ``decide``; the answers (allowed, reason, HTTP status)
must agree. A second property runs both over random permission tables, where
the parent-view rule (vacuous with the real table) can bite.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.access import Membership, Permission, ResourcePath, decide

DOMAIN_TABLE = """
| permission | org_admin | project_admin | operator | viewer |
| --- | --- | --- | --- | --- |
| ViewOrg | ✓ | ✓ | ✓ | ✓ |
| ManageOrgMemberships (members, API keys, signing keys) | ✓ | – | – | – |
| ViewProject | ✓ | ✓ | ✓ | ✓ |
| ManageProject (settings, environments, delete) | ✓ | ✓ | – | – |
| OperateProject (drafts, versions) | ✓ | ✓ | ✓ | – |
| ViewEnvironment | ✓ | ✓ | ✓ | ✓ |
| ManageEnvironment (posture, enrollment tokens, revoke agents, retention) | ✓ | ✓ | – | – |
| OperateEnvironment (bundles, deployments, approve/deny, replays) | ✓ | ✓ | ✓ | – |
"""

Truth = dict[tuple[str, str], bool]


def parse_table(text: str) -> Truth:
    """``{(permission, role): granted}`` from a markdown table of ✓ and – cells."""
    lines = [line.strip() for line in text.strip().splitlines()]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    roles = header[1:]
    truth: Truth = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        permission = cells[0].split(" ")[0]
        for role, cell in zip(roles, cells[1:], strict=True):
            assert cell in ("✓", "–"), cell
            truth[(permission, role)] = cell == "✓"
    return truth


TRUTH = parse_table(DOMAIN_TABLE)
ROLES = ("org_admin", "project_admin", "operator", "viewer")
PERMISSIONS = tuple(sorted({permission for permission, _ in TRUTH}))
# Which level of the tree a permission is about, read off its name.
LEVEL = {p: next(lv for lv in ("Environment", "Project", "Org") if lv in p) for p in PERMISSIONS}


# --- the rules, as data ------------------------------------------------------------

RULES: list[tuple[str, str, Any]] = [
    ("deny", "not_a_member", ("not", ("member_here",))),
    ("deny", "principal_kind_not_permitted", ("not", ("kind_in", "user", "api_key"))),
    (
        "deny",
        "api_key_cannot_manage_memberships",
        ("and", ("kind_in", "api_key"), ("permission_is", "ManageOrgMemberships")),
    ),
    ("allow", "allowed", ("org_role_is", "org_admin")),
    ("deny", "role_lacks_permission", ("not", ("granted", "acting_role", "$permission"))),
    (
        "deny",
        "role_lacks_permission",
        (
            "and",
            ("level_is", "Environment"),
            (
                "or",
                ("not", ("granted", "acting_role", "ViewProject")),
                ("not", ("granted", "org_role", "ViewOrg")),
            ),
        ),
    ),
    (
        "deny",
        "environment_not_granted",
        (
            "and",
            ("level_is", "Environment"),
            ("not", ("permission_is", "ViewEnvironment")),
            ("project_grant_is", "operator"),
            ("has_environment_list",),
            ("not", ("environment_listed",)),
        ),
    ),
    ("allow", "allowed", ("true",)),
]


def holds(expr: Any, facts: dict[str, Any], truth: Truth) -> bool:
    """Evaluate one condition of RULES against ``facts``."""
    op, *args = expr
    if op == "true":
        return True
    if op == "not":
        return not holds(args[0], facts, truth)
    if op == "and":
        return all(holds(a, facts, truth) for a in args)
    if op == "or":
        return any(holds(a, facts, truth) for a in args)
    if op == "granted":
        who, what = args
        permission = facts["permission"] if what == "$permission" else what
        return truth.get((permission, facts[who]), False)
    if op == "kind_in":
        return facts["kind"] in args
    simple = {
        "member_here": lambda: facts["member_here"],
        "permission_is": lambda: facts["permission"] == args[0],
        "org_role_is": lambda: facts["org_role"] == args[0],
        "level_is": lambda: LEVEL[facts["permission"]] == args[0],
        "project_grant_is": lambda: facts["project_grant"] == args[0],
        "has_environment_list": lambda: bool(facts["environment_list"]),
        "environment_listed": lambda: facts["environment"] in facts["environment_list"],
    }
    return bool(simple[op]())


# --- requests as plain data ----------------------------------------------------------


@dataclass(frozen=True)
class Member:
    org: int
    role: str
    projects: dict[int, str] = field(default_factory=dict)
    narrowing: dict[int, frozenset[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    kind: str
    member: Member | None
    permission: str
    org: int
    project: int | None
    environment: int | None


def facts_of(request: Request) -> dict[str, Any]:
    """What the rules look at, worked out from the plain request."""
    m = request.member
    if m is None or m.org != request.org:
        return {"member_here": False, "kind": request.kind, "permission": request.permission}
    project_scoped = LEVEL[request.permission] != "Org" and request.project is not None
    grant = m.projects.get(request.project) if project_scoped else None  # type: ignore[arg-type]
    return {
        "member_here": True,
        "kind": request.kind,
        "permission": request.permission,
        "org_role": m.role,
        "acting_role": grant if grant is not None else m.role,
        "project_grant": grant,
        "environment_list": m.narrowing.get(request.project, frozenset())  # type: ignore[arg-type]
        if grant is not None
        else frozenset(),
        "environment": request.environment,
    }


def model(request: Request, truth: Truth = TRUTH) -> tuple[tuple[bool, str, int], int]:
    """The answer (allowed, reason, HTTP status) and the index of the rule that gave it."""
    facts = facts_of(request)
    for index, (verdict, reason, condition) in enumerate(RULES):
        if holds(condition, facts, truth):
            status = 200 if verdict == "allow" else (404 if reason == "not_a_member" else 403)
            return (verdict == "allow", reason, status), index
    raise AssertionError("the last rule always holds")


def to_domain(request: Request) -> tuple[Membership | None, ResourcePath]:
    def u(n: int | None) -> uuid.UUID | None:
        return None if n is None else uuid.UUID(int=n)

    membership = None
    if request.member is not None:
        m = request.member
        membership = Membership(
            org_id=uuid.UUID(int=m.org),
            org_role=m.role,  # type: ignore[arg-type]
            project_roles={uuid.UUID(int=p): r for p, r in m.projects.items()},  # type: ignore[misc]
            operator_environments={
                uuid.UUID(int=p): frozenset(uuid.UUID(int=e) for e in envs)
                for p, envs in m.narrowing.items()
            },
        )
    path = ResourcePath(uuid.UUID(int=request.org), u(request.project), u(request.environment))
    return membership, path


# --- strategies -------------------------------------------------------------------------

# Few ids, so that memberships, grants, paths and environment lists often meet.
ORGS = st.sampled_from([1, 2])
PROJECTS = st.sampled_from([10, 11])  # the same as PROJECT_IDS
ENVIRONMENTS = st.sampled_from([100, 101, 102])
KINDS = st.sampled_from(["user", "user", "api_key", "api_key", "agent", "robot"])
ROLE_NAMES = st.sampled_from(ROLES)
PROJECT_IDS = (10, 11)
GRANT_OR_NONE = st.sampled_from([None, "project_admin", "operator", "operator", "viewer"])
ENVIRONMENT_LIST_OR_NONE = st.one_of(st.none(), st.frozensets(ENVIRONMENTS, max_size=2))
# Environment permissions twice: they are the ones with the most rules.
PERMISSION_NAMES = st.sampled_from(
    sorted(PERMISSIONS + tuple(p for p in PERMISSIONS if LEVEL[p] == "Environment"))
)
DEPTHS = st.sampled_from(["org", "project", "environment", "environment"])
NO_MEMBER = st.sampled_from([True, False, False, False, False, False])
SAME_ORG = st.sampled_from([True, True, True, False])


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    depth = draw(DEPTHS)
    org = draw(ORGS)
    member = None
    if not draw(NO_MEMBER):
        member = Member(
            org=org if draw(SAME_ORG) else draw(ORGS),
            role=draw(ROLE_NAMES),
            projects={p: g for p in PROJECT_IDS if (g := draw(GRANT_OR_NONE)) is not None},
            narrowing={
                p: envs for p in PROJECT_IDS if (envs := draw(ENVIRONMENT_LIST_OR_NONE)) is not None
            },
        )
    return Request(
        kind=draw(KINDS),
        member=member,
        permission=draw(PERMISSION_NAMES),
        org=org,
        project=draw(PROJECTS) if depth != "org" else None,
        environment=draw(ENVIRONMENTS) if depth == "environment" else None,
    )


FOCUSED_GRANTS = st.sampled_from(["operator", "operator", "viewer", "project_admin"])


@st.composite
def _narrowed_operator_requests(draw: st.DrawFn) -> Request:
    """A member with a project grant and an environment list for it, acting in that project:
    the case with the most rules in play, rare in ``_requests``. Mostly ``operator`` grants
    (the list counts), sometimes others (the list must not count)."""
    request = draw(_requests())
    org = request.org
    project = draw(PROJECTS)
    base = request.member or Member(org=org, role="viewer")
    member = Member(
        org=org,
        role=base.role,
        projects={**base.projects, project: draw(FOCUSED_GRANTS)},
        narrowing={**base.narrowing, project: draw(st.frozensets(ENVIRONMENTS, min_size=1))},
    )
    environment = draw(st.one_of(st.none(), ENVIRONMENTS))
    return Request(
        kind=request.kind,
        member=member,
        permission=request.permission,
        org=org,
        project=project,
        environment=environment,
    )


requests = st.one_of(_requests(), _requests(), _narrowed_operator_requests())
# Mostly granted cells, so that denials come from the rules rather than from an empty table.
_CELLS = st.sampled_from([True, True, True, False])
truth_tables = st.fixed_dictionaries({(p, r): _CELLS for p in PERMISSIONS for r in ROLES})


def answer(
    request: Request, table: dict[str, frozenset[Permission]] | None = None
) -> tuple[bool, str, int]:
    membership, path = to_domain(request)
    permission = Permission(request.permission)
    kind: Any = request.kind
    if table is None:
        decision = decide(kind, membership, permission, path)
    else:
        decision = decide(kind, membership, permission, path, table=table)
    return decision.allowed, decision.reason, decision.status


# --- properties ---------------------------------------------------------------------------

REASONS = {reason for _, reason, _ in RULES}
PARENT_RULE = 5  # the parent-view rule: vacuous with the real table


def test_the_model_table_names_every_permission_and_role() -> None:
    assert {p.value for p in Permission} == set(PERMISSIONS)
    assert len(TRUTH) == len(PERMISSIONS) * len(ROLES)
    assert RULES[PARENT_RULE][2][1] == ("level_is", "Environment")


def test_decide_agrees_with_the_reference_model() -> None:
    reasons: Counter[str] = Counter()

    @settings(max_examples=700, deadline=None)
    @given(requests)
    def agree(request: Request) -> None:
        expected, _ = model(request)
        assert answer(request) == expected
        reasons[expected[1]] += 1

    agree()
    # The generators reach every answer, so agreement means something.
    assert set(reasons) == REASONS, reasons


def test_decide_agrees_with_the_model_under_any_permission_table() -> None:
    rules: Counter[int] = Counter()

    @settings(max_examples=500, deadline=None)
    @given(requests, truth_tables)
    def agree(request: Request, truth: Truth) -> None:
        table = {
            role: frozenset(Permission(p) for p in PERMISSIONS if truth[(p, role)])
            for role in ROLES
        }
        expected, rule = model(request, truth)
        assert answer(request, table) == expected
        rules[rule] += 1

    agree()
    assert rules[PARENT_RULE] > 0, rules
