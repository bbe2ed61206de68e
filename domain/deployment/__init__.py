"""Deployment: one config bundle rolled out to an environment's agents (DOMAIN.md §5).

State machine (stream ``deployment-<id>``; every arrow is one event, stamped ``at``)::

    from              action                                         to
    ----------------  ---------------------------------------------  ----------------
    (none)            request, posture needs an approval             pending_approval
    (none)            request, no approval needed                    approved
    pending_approval  approve (the approval is approved)             approved
    pending_approval  deny (the approval is denied/expired/revoked)  denied        (terminal)
    approved          start_build                                    building
    building          complete_build                                 deploying
    building          fail_build                                     failed
    deploying         report_activated by the last targeted agent    active
    deploying         report_failed by any targeted agent            failed
    deploying         expire, now ≥ deploying_since + timeout        failed
    active            settle: a newer deployment became active       superseded    (terminal)
    active | failed   rollback                                       rolling_back
    rolling_back      settle: its rollback deployment became active  rolled_back   (terminal)
    rolling_back      abandon_rollback: that one was denied/failed   active | failed (as before)

    report_activated by one agent of several records the agent and stays deploying.

Repeats are no-ops, because agents and jobs retry: a report an agent already
made, ``start_build`` with the same job, ``complete_build`` with the same
digest, ``expire`` before the timeout or outside ``deploying``. Any other
action in the wrong state → 409 ``deployment_illegal_transition``.

In-flight cap: ``pending_approval``, ``approved``, ``building``, ``deploying``
and ``rolling_back`` count against the environment's
``max_inflight_deployments`` (decision: DOMAIN.md says "non-terminal"; active
and failed deployments are at rest and do not hold a slot, or three old
failures would lock an environment). ``check_capacity`` takes the count from
the caller (a read model); rollbacks are exempt so the way back is never
blocked. Two requests racing past the count can overshoot it by one each; a
strict cap needs the write side to serialize requests per environment.

Rollback (decision): ``rollback`` puts the deployment in ``rolling_back`` and
requests a new deployment (``rollback_of`` set) of the bundle to restore: the
one the deployment superseded when it became active, or, for a failed one, the
environment's active deployment. The new deployment runs the normal path
(approval per posture, build, deploy); when it becomes active, ``settle``
moves the rolled-back one to ``rolled_back`` and supersedes any other active one.

Modules: ``events`` (events and the agents' status report), ``state`` (the
folded stream, ``evolve``/``fold``, errors), ``decisions`` (request, approval
outcome, build, reports, timeout), ``rollback`` (supersede and rollback).
Everything is re-exported here; callers import ``domain.deployment``.
"""

from domain.deployment.decisions import (
    MAX_AGENTS,
    CreateDeployment,
    DeploymentPlan,
    approve,
    check_capacity,
    complete_build,
    deny,
    expire,
    fail_build,
    report,
    report_activated,
    report_failed,
    request_deployment,
    require_deployment,
    start_build,
    timeout_at,
)
from domain.deployment.events import (
    DEFAULT_ACTIVATION_TIMEOUT_S,
    EVENTS,
    MAX_REASON,
    AppliedTuning,
    DeploymentActivated,
    DeploymentAgentActivated,
    DeploymentAgentFailed,
    DeploymentApproved,
    DeploymentBuildCompleted,
    DeploymentBuildStarted,
    DeploymentDenied,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentRequested,
    DeploymentRollbackAbandoned,
    DeploymentRollbackStarted,
    DeploymentRolledBack,
    DeploymentSuperseded,
    ReportState,
    StatusReport,
    TuningState,
)
from domain.deployment.rollback import abandon_rollback, rollback, settle
from domain.deployment.state import (
    IN_FLIGHT,
    STATUSES,
    STREAM_TYPE,
    TERMINAL,
    AgentNotTargeted,
    AgentReport,
    Deployment,
    DeploymentCapReached,
    HistoryEntry,
    IllegalDeploymentTransition,
    NothingToRestore,
    Rollout,
    Status,
    evolve,
    fold,
    rollout,
    stream_id,
)

__all__ = [
    "DEFAULT_ACTIVATION_TIMEOUT_S",
    "EVENTS",
    "IN_FLIGHT",
    "MAX_AGENTS",
    "MAX_REASON",
    "STATUSES",
    "STREAM_TYPE",
    "TERMINAL",
    "AgentNotTargeted",
    "AgentReport",
    "AppliedTuning",
    "CreateDeployment",
    "Deployment",
    "DeploymentActivated",
    "DeploymentAgentActivated",
    "DeploymentAgentFailed",
    "DeploymentApproved",
    "DeploymentBuildCompleted",
    "DeploymentBuildStarted",
    "DeploymentCapReached",
    "DeploymentDenied",
    "DeploymentEvent",
    "DeploymentFailed",
    "DeploymentPlan",
    "DeploymentRequested",
    "DeploymentRollbackAbandoned",
    "DeploymentRollbackStarted",
    "DeploymentRolledBack",
    "DeploymentSuperseded",
    "HistoryEntry",
    "IllegalDeploymentTransition",
    "NothingToRestore",
    "ReportState",
    "Rollout",
    "Status",
    "StatusReport",
    "TuningState",
    "abandon_rollback",
    "approve",
    "check_capacity",
    "complete_build",
    "deny",
    "evolve",
    "expire",
    "fail_build",
    "fold",
    "report",
    "report_activated",
    "report_failed",
    "request_deployment",
    "require_deployment",
    "rollback",
    "rollout",
    "settle",
    "start_build",
    "stream_id",
    "timeout_at",
]
