from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import msgspec
import pytest

from domain import approval, config_bundle, deployment
from domain.approval import Approval
from domain.codec import convert_command
from domain.config_bundle import ConfigBundle, ConfigBundleUsed
from domain.deployment import (
    AgentNotTargeted,
    AppliedTuning,
    CreateDeployment,
    Deployment,
    DeploymentActivated,
    DeploymentAgentActivated,
    DeploymentCapReached,
    DeploymentFailed,
    DeploymentRequested,
    IllegalDeploymentTransition,
    NothingToRestore,
    StatusReport,
)
from domain.environment import Environment, Posture
from domain.errors import InvalidInput, NotFound
from tests.lifecycle import (
    AGENTS,
    ALICE,
    BOB,
    ENV,
    NOW,
    OPERATE,
    OTHER_ENV,
    SPEC_HASH,
    Signer,
    a_bundle,
    a_project,
    an_env,
    an_org,
    through_codec,
)

SIGNER = Signer()
DEP = uuid.UUID(int=0xD1)
DEP2 = uuid.UUID(int=0xD2)
ROLLBACK = uuid.UUID(int=0xD3)
APPROVAL = uuid.UUID(int=0xA1)
JOB = uuid.UUID(int=0x70B)
BUNDLE1 = uuid.UUID(int=6)
BUNDLE2 = uuid.UUID(int=0xB2)


class World:
    """One environment's streams, folded after every step as a handler would."""

    def __init__(self, posture: Posture = "prod", capabilities: tuple[str, ...] = ("http_post",)):
        self.env: Environment = an_env(posture)
        self.bundles: dict[uuid.UUID, ConfigBundle] = {
            b: a_bundle(self.env, bundle_id=b, capabilities=capabilities)
            for b in (uuid.UUID(int=6), BUNDLE2)
        }
        self.deployments: dict[uuid.UUID, Deployment] = {}
        self.approvals: dict[uuid.UUID, Approval] = {}
        self.now = NOW

    def tick(self, seconds: int = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def apply(self, plan: deployment.DeploymentPlan, rolled_back: uuid.UUID | None = None) -> None:
        dep = deployment.fold(through_codec(plan.deployment))
        assert dep is not None
        self.deployments[dep.id] = dep
        bundle = self.bundles[dep.bundle_id]
        self.bundles[bundle.id] = _then_bundle(bundle, plan.bundle)
        if plan.approval:
            found = approval.fold(through_codec(plan.approval))
            assert found is not None
            self.approvals[found.id] = found
        if rolled_back is not None:
            self.step(rolled_back, plan.rolled_back)

    def step(self, dep_id: uuid.UUID, events: tuple[deployment.DeploymentEvent, ...]) -> Deployment:
        state = self.deployments[dep_id]
        for event in through_codec(events):
            assert isinstance(event, deployment.DeploymentEvent)
            state = deployment.evolve(state, event)
        self.deployments[dep_id] = state
        return state

    def request(self, dep_id: uuid.UUID = DEP, bundle_id: uuid.UUID = BUNDLE1) -> Deployment:
        in_flight = sum(d.status in deployment.IN_FLIGHT for d in self.deployments.values())
        plan = deployment.request_deployment(
            an_org(),
            a_project(),
            self.env,
            self.bundles[bundle_id],
            deployment_id=dep_id,
            approval_id=uuid.UUID(int=dep_id.int + 0x1000),
            agent_ids=AGENTS,
            in_flight=in_flight,
            requested_by=ALICE,
            now=self.tick(),
        )
        self.apply(plan)
        return self.deployments[dep_id]

    def approve(self, dep_id: uuid.UUID = DEP) -> Deployment:
        dep = self.deployments[dep_id]
        if dep.status == "approved":
            return dep
        assert dep.approval_id is not None
        pending = self.approvals[dep.approval_id]
        events = approval.approve(
            pending,
            approver_id=BOB,
            authorization=OPERATE,
            now=self.tick(),
            kid="k",
            sign=SIGNER.sign,
        )
        decided = approval.evolve(pending, events[0])
        self.approvals[decided.id] = decided
        return self.step(dep_id, deployment.approve(dep, decided, self.now))

    def build(self, dep_id: uuid.UUID = DEP) -> Deployment:
        self.approve(dep_id)
        self.step(dep_id, deployment.start_build(self.deployments[dep_id], JOB, self.tick()))
        events = deployment.complete_build(
            self.deployments[dep_id],
            bundle_digest=f"sha256:{dep_id.int:064x}",
            bundle_key=f"bundles/{dep_id}",
            kid="k",
            now=self.tick(),
        )
        return self.step(dep_id, events)

    def activate(self, dep_id: uuid.UUID = DEP) -> Deployment:
        self.build(dep_id)
        active = [d.id for d in self.deployments.values() if d.status == "active"]
        for agent in AGENTS:
            self.step(
                dep_id,
                deployment.report_activated(
                    self.deployments[dep_id],
                    agent,
                    now=self.tick(),
                    replacing=active[0] if active else None,
                ),
            )
        activated = self.deployments[dep_id]
        assert activated.status == "active"
        for other in list(self.deployments.values()):
            self.step(other.id, deployment.settle(other, activated, self.now))
        return activated


def _then_bundle(
    bundle: ConfigBundle, events: tuple[config_bundle.ConfigBundleEvent, ...]
) -> ConfigBundle:
    for event in events:
        bundle = config_bundle.evolve(bundle, event)
    return bundle


# --- request ------------------------------------------------------------------------------


def test_a_prod_deployment_waits_for_an_approval_created_with_it() -> None:
    world = World("prod")
    dep = world.request()
    assert dep.status == "pending_approval"
    assert dep.approval_id == uuid.UUID(int=DEP.int + 0x1000)
    pending = world.approvals[dep.approval_id]
    assert (pending.status, pending.subject_id, pending.spec_hash) == ("pending", DEP, SPEC_HASH)
    assert (pending.requested_by, pending.capabilities) == (ALICE, ("http_post",))
    assert dep.agent_ids == tuple(sorted(AGENTS))
    assert [h.status for h in dep.history] == ["pending_approval"]


def test_a_request_locks_its_bundle_in_the_same_plan() -> None:
    world = World("dev")
    world.request()
    bundle = world.bundles[uuid.UUID(int=6)]
    assert bundle.locked and bundle.used_by == (DEP,)


@pytest.mark.parametrize(
    ("posture", "capabilities", "status"),
    [
        ("dev", ("exec",), "approved"),
        ("staging", (), "approved"),
        ("staging", ("http_post",), "pending_approval"),
        ("prod", (), "pending_approval"),
    ],
)
def test_the_posture_decides_whether_a_deployment_starts_approved(
    posture: Posture, capabilities: tuple[str, ...], status: str
) -> None:
    world = World(posture, capabilities)
    dep = world.request()
    assert dep.status == status
    assert (dep.approval_id is None) is (status == "approved")
    assert bool(world.approvals) is (status != "approved")


def test_the_in_flight_cap_answers_409_deployment_cap_reached() -> None:
    world = World("prod")
    for i in range(3):
        world.request(uuid.UUID(int=0x500 + i))
    with pytest.raises(DeploymentCapReached) as info:
        world.request(uuid.UUID(int=0x600))
    assert (info.value.status, info.value.code) == (409, "deployment_cap_reached")
    assert info.value.context == {"environment_id": str(ENV), "in_flight": 3, "limit": 3}


def test_active_and_failed_deployments_hold_no_slot() -> None:
    world = World("dev")
    world.request(DEP)
    world.activate(DEP)
    world.request(DEP2, BUNDLE2)
    world.build(DEP2)
    world.step(DEP2, deployment.report_failed(world.deployments[DEP2], AGENTS[0], now=world.tick()))
    for i in range(3):
        world.request(uuid.UUID(int=0x500 + i))


def test_a_deployment_targets_at_least_one_agent() -> None:
    world = World("dev")
    with pytest.raises(InvalidInput) as info:
        deployment.request_deployment(
            an_org(),
            a_project(),
            world.env,
            world.bundles[uuid.UUID(int=6)],
            deployment_id=DEP,
            approval_id=APPROVAL,
            agent_ids=(),
            in_flight=0,
            requested_by=ALICE,
            now=NOW,
        )
    assert info.value.code == "deployment_no_agents"
    assert info.value.errors[0].path == "/agent_ids"


def test_a_bundle_of_another_environment_cannot_be_deployed() -> None:
    world = World("dev")
    other = a_bundle(an_env("dev", env_id=OTHER_ENV))
    with pytest.raises(NotFound) as info:
        deployment.request_deployment(
            an_org(),
            a_project(),
            world.env,
            other,
            deployment_id=DEP,
            approval_id=APPROVAL,
            agent_ids=AGENTS,
            in_flight=0,
            requested_by=ALICE,
            now=NOW,
        )
    assert info.value.code == "bundle_not_found"


# --- approval outcome ----------------------------------------------------------------------


def test_approval_moves_the_deployment_to_approved() -> None:
    world = World("prod")
    world.request()
    assert world.approve().status == "approved"


@pytest.mark.parametrize("outcome", ["denied", "expired", "revoked"])
def test_a_denied_expired_or_revoked_approval_denies_the_deployment(outcome: str) -> None:
    world = World("prod")
    dep = world.request()
    assert dep.approval_id is not None
    pending = world.approvals[dep.approval_id]
    if outcome == "denied":
        events = approval.deny(pending, approver_id=BOB, authorization=OPERATE, now=NOW)
    elif outcome == "expired":
        events = approval.expire(pending, pending.expires_at)
    else:
        events = approval.revoke(pending, by=ALICE, authorization=OPERATE, now=NOW)
    decided = approval.evolve(pending, events[0])
    denied = world.step(DEP, deployment.deny(dep, decided, world.tick()))
    assert denied.status == "denied"
    assert denied.history[-1].reason == outcome
    assert deployment.deny(denied, decided, world.tick()) == ()
    with pytest.raises(IllegalDeploymentTransition):
        deployment.start_build(denied, JOB, world.tick())


def test_a_pending_approval_does_not_approve_the_deployment() -> None:
    world = World("prod")
    dep = world.request()
    assert dep.approval_id is not None
    with pytest.raises(IllegalDeploymentTransition) as info:
        deployment.approve(dep, world.approvals[dep.approval_id], NOW)
    assert info.value.code == "deployment_illegal_transition"


# --- build and rollout ------------------------------------------------------------------------


def test_building_then_deploying_records_the_bundle_digest_and_time() -> None:
    world = World("dev")
    world.request()
    dep = world.build()
    assert dep.status == "deploying"
    assert dep.build_job_id == JOB
    assert dep.bundle_digest == f"sha256:{DEP.int:064x}"
    assert dep.deploying_since == world.now
    assert [h.status for h in dep.history] == ["approved", "building", "deploying"]
    assert deployment.start_build(dep, JOB, world.now) == ()  # a late duplicate
    assert (
        deployment.complete_build(
            dep, bundle_digest=dep.bundle_digest or "", bundle_key="k", kid="k", now=world.now
        )
        == ()
    )


def test_a_build_failure_fails_the_deployment() -> None:
    world = World("dev")
    world.request()
    world.approve()
    dep = world.step(DEP, deployment.start_build(world.deployments[DEP], JOB, world.tick()))
    failed = world.step(DEP, deployment.fail_build(dep, "vault: secret missing", world.tick()))
    assert (failed.status, failed.failure_reason) == ("failed", "build_failed")
    assert deployment.fail_build(failed, "again", world.tick()) == ()


def test_the_deployment_becomes_active_when_every_agent_has_activated() -> None:
    world = World("dev")
    world.request()
    dep = world.build()
    tuning = (AppliedTuning(key="pinning", requested="isolated", applied="none", state="degraded"),)
    dep = world.step(
        DEP, deployment.report_activated(dep, AGENTS[0], now=world.tick(), applied_tuning=tuning)
    )
    assert dep.status == "deploying"
    assert deployment.report_activated(dep, AGENTS[0], now=world.tick()) == ()
    rollout = deployment.rollout(dep)
    assert (rollout.targeted, rollout.activated, rollout.pending) == (3, (AGENTS[0],), AGENTS[1:])
    assert dep.report_of(AGENTS[0]) is not None
    assert dep.report_of(AGENTS[0]).applied_tuning == tuning  # type: ignore[union-attr]
    dep = world.step(DEP, deployment.report_activated(dep, AGENTS[1], now=world.tick()))
    events = deployment.report_activated(dep, AGENTS[2], now=world.tick())
    assert [type(e) for e in events] == [DeploymentAgentActivated, DeploymentActivated]
    assert world.step(DEP, events).status == "active"


def test_any_failure_report_fails_the_deployment() -> None:
    world = World("dev")
    world.request()
    dep = world.build()
    dep = world.step(DEP, deployment.report_activated(dep, AGENTS[0], now=world.tick()))
    events = deployment.report(
        dep, AGENTS[1], StatusReport(state="failed", reason="bad config"), now=world.tick()
    )
    failed = world.step(DEP, events)
    assert (failed.status, failed.failure_reason) == ("failed", "agent_failed")
    assert deployment.rollout(failed).failed == (AGENTS[1],)
    assert deployment.report_failed(failed, AGENTS[1], now=world.tick()) == ()
    with pytest.raises(IllegalDeploymentTransition):
        deployment.report_activated(failed, AGENTS[2], now=world.tick())


def test_an_agent_outside_the_deployment_cannot_report() -> None:
    world = World("dev")
    world.request()
    with pytest.raises(AgentNotTargeted) as info:
        deployment.report_activated(world.build(), uuid.UUID(int=0xFFF), now=NOW)
    assert (info.value.status, info.value.code) == (403, "deployment_agent_not_targeted")


def test_no_acknowledgement_within_the_timeout_fails_the_deployment() -> None:
    world = World("dev")
    world.request()
    dep = world.build()
    dep = world.step(DEP, deployment.report_activated(dep, AGENTS[0], now=world.tick()))
    due = deployment.timeout_at(dep)
    assert due == dep.deploying_since + timedelta(seconds=600)  # type: ignore[operator]
    assert deployment.expire(dep, due - timedelta(seconds=1)) == ()
    events = deployment.expire(dep, due)
    assert events == (
        DeploymentFailed(
            reason="activation_timeout",
            detail="no activation within 600 s",
            agent_ids=AGENTS[1:],
            at=due,
        ),
    )
    failed = world.step(DEP, events)
    assert failed.status == "failed"
    assert deployment.expire(failed, due + timedelta(hours=1)) == ()


def test_a_status_report_body_is_strict() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"state": "activated", "extra": 1}, StatusReport)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"state": "running"}, StatusReport)


# --- supersede and rollback ------------------------------------------------------------------


def test_a_newer_active_deployment_supersedes_the_previous_one() -> None:
    world = World("dev")
    world.request(DEP)
    world.activate(DEP)
    world.request(DEP2, BUNDLE2)
    second = world.activate(DEP2)
    assert second.supersedes == DEP
    first = world.deployments[DEP]
    assert (first.status, first.superseded_by) == ("superseded", DEP2)


def test_rollback_restores_the_previous_active_bundle() -> None:
    world = World("prod")
    world.request(DEP)
    world.activate(DEP)
    world.request(DEP2, BUNDLE2)
    world.activate(DEP2)
    plan = deployment.rollback(
        an_org(),
        a_project(),
        world.env,
        world.deployments[DEP2],
        world.deployments[DEP],
        world.bundles[uuid.UUID(int=6)],
        rollback_id=ROLLBACK,
        approval_id=APPROVAL,
        requested_by=ALICE,
        now=world.tick(),
    )
    world.apply(plan, rolled_back=DEP2)
    rolling = world.deployments[DEP2]
    assert (rolling.status, rolling.rollback_id, rolling.restores_deployment_id) == (
        "rolling_back",
        ROLLBACK,
        DEP,
    )
    restoring = world.deployments[ROLLBACK]
    assert (restoring.bundle_id, restoring.rollback_of) == (uuid.UUID(int=6), DEP2)
    assert restoring.status == "pending_approval"  # prod: a rollback is a deployment too
    assert world.bundles[uuid.UUID(int=6)].used_by == (DEP, ROLLBACK)
    assert plan.bundle == (ConfigBundleUsed(deployment_id=ROLLBACK),)
    world.activate(ROLLBACK)
    assert world.deployments[DEP2].status == "rolled_back"
    assert world.deployments[ROLLBACK].status == "active"
    assert world.deployments[DEP].status == "superseded"


def test_rolling_back_a_failed_deployment_redeploys_the_active_bundle() -> None:
    world = World("dev")
    world.request(DEP)
    world.activate(DEP)
    world.request(DEP2, BUNDLE2)
    world.build(DEP2)
    world.step(DEP2, deployment.report_failed(world.deployments[DEP2], AGENTS[0], now=world.tick()))
    plan = deployment.rollback(
        an_org(),
        a_project(),
        world.env,
        world.deployments[DEP2],
        world.deployments[DEP],
        world.bundles[uuid.UUID(int=6)],
        rollback_id=ROLLBACK,
        approval_id=APPROVAL,
        requested_by=ALICE,
        now=world.tick(),
    )
    world.apply(plan, rolled_back=DEP2)
    assert world.deployments[ROLLBACK].status == "approved"  # dev needs no approval
    world.activate(ROLLBACK)
    assert world.deployments[DEP2].status == "rolled_back"
    assert world.deployments[DEP].status == "superseded"


def test_a_failed_rollback_returns_the_deployment_to_where_it_was() -> None:
    world = World("dev")
    world.request(DEP)
    world.activate(DEP)
    world.request(DEP2, BUNDLE2)
    world.activate(DEP2)
    plan = deployment.rollback(
        an_org(),
        a_project(),
        world.env,
        world.deployments[DEP2],
        world.deployments[DEP],
        world.bundles[uuid.UUID(int=6)],
        rollback_id=ROLLBACK,
        approval_id=APPROVAL,
        requested_by=ALICE,
        now=world.tick(),
    )
    world.apply(plan, rolled_back=DEP2)
    world.build(ROLLBACK)
    world.step(
        ROLLBACK, deployment.report_failed(world.deployments[ROLLBACK], AGENTS[0], now=world.tick())
    )
    back = world.step(
        DEP2,
        deployment.abandon_rollback(
            world.deployments[DEP2], world.deployments[ROLLBACK], world.tick()
        ),
    )
    assert (back.status, back.rollback_id) == ("active", None)
    assert back.history[-1].reason == "rollback_failed"


def test_rollback_needs_something_to_restore() -> None:
    world = World("dev")
    world.request(DEP)
    first = world.activate(DEP)
    with pytest.raises(NothingToRestore) as info:
        deployment.rollback(
            an_org(),
            a_project(),
            world.env,
            first,
            None,
            None,
            rollback_id=ROLLBACK,
            approval_id=APPROVAL,
            requested_by=ALICE,
            now=NOW,
        )
    assert (info.value.status, info.value.code) == (409, "deployment_nothing_to_restore")


def test_only_active_or_failed_deployments_roll_back() -> None:
    world = World("dev")
    dep = world.request(DEP)
    with pytest.raises(IllegalDeploymentTransition):
        deployment.rollback(
            an_org(),
            a_project(),
            world.env,
            dep,
            None,
            None,
            rollback_id=ROLLBACK,
            approval_id=APPROVAL,
            requested_by=ALICE,
            now=NOW,
        )


def test_rollbacks_are_exempt_from_the_cap() -> None:
    world = World("dev")
    world.request(DEP)
    world.activate(DEP)
    world.request(DEP2, BUNDLE2)
    world.activate(DEP2)
    for i in range(3):
        world.request(uuid.UUID(int=0x500 + i), BUNDLE2)
    plan = deployment.rollback(
        an_org(),
        a_project(),
        world.env,
        world.deployments[DEP2],
        world.deployments[DEP],
        world.bundles[uuid.UUID(int=6)],
        rollback_id=ROLLBACK,
        approval_id=APPROVAL,
        requested_by=ALICE,
        now=world.tick(),
    )
    assert isinstance(plan.deployment[0], DeploymentRequested)


def test_history_round_trips_through_the_codec() -> None:
    world = World("prod")
    world.request()
    world.activate()
    dep = world.deployments[DEP]
    assert [h.status for h in dep.history] == [
        "pending_approval",
        "approved",
        "building",
        "deploying",
        "active",
    ]
    assert dep.version == 1 + 4 + len(AGENTS)


def test_the_create_body_takes_a_bundle_and_optionally_some_agents() -> None:
    body = convert_command(CreateDeployment, {"bundle_id": str(BUNDLE1)})
    assert (body.bundle_id, body.agent_ids) == (BUNDLE1, None)
    for bad in ({"bundle_id": "x"}, {"bundle_id": str(BUNDLE1), "agent_ids": []}, {"env": 1}):
        with pytest.raises(InvalidInput) as info:
            convert_command(CreateDeployment, bad)
        assert info.value.code == "invalid_input"
