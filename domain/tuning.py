"""Runtime tuning of a config bundle: a profile plus typed overrides (DOMAIN.md §5).

``check_tuning(data, findings)`` validates the raw JSON value of a bundle's
``tuning`` and returns the typed ``Tuning`` (or None when a finding was added).
Every finding's path is a JSON pointer under ``/tuning``.

=========================  ============================================================
code                       rule
=========================  ============================================================
tuning_not_object          ``tuning`` is a JSON object
tuning_profile_missing     ``profile`` is present
tuning_unknown_key         only the keys of ``FIELDS`` (fail closed: a misspelt
                           override must not be silently ignored)
tuning_wrong_type          strings for choices, ``true``/``false`` for ``mlockall``,
                           integers (never booleans or floats) for numbers; no ``null``
tuning_invalid_choice      ``profile``, ``wait_strategy``, ``pinning`` take one of their values
tuning_out_of_range        ``rt_priority`` 1..99, ``ring_capacity`` 1024..16777216,
                           ``batch_size`` 1..4096
tuning_not_power_of_two    ``ring_capacity`` is a power of two
tuning_profile_conflict    an override contradicts the profile (below)
=========================  ============================================================

Contradictions with the profile (decision; DOMAIN.md names only the first):
``rt_priority`` only with ``isolated-core``; ``pinning=isolated`` only with
``isolated-core`` (isolated cores are what that profile reserves);
``isolated-core`` with ``pinning`` ``none`` or ``balanced`` (the profile pins to
its cores); ``wait_strategy=backoff`` with ``low-latency`` or ``isolated-core``
(both busy-poll by definition). A conflict is reported on the override's path,
and only when the profile and the override are each valid on their own.

``requested(tuning)`` resolves the profile's defaults under the overrides: the
values an agent is asked to apply, which it reports back as ``applied_tuning``
(DOMAIN.md §6), and ``runtime_config_text`` is their KV rendering for the
deploy bundle's ``runtime_config.txt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, cast

import msgspec

from domain.findings import Findings, child

Profile = Literal["default", "low-latency", "isolated-core"]
WaitStrategy = Literal["backoff", "spin"]
Pinning = Literal["none", "balanced", "isolated"]

PROFILES: Final[tuple[Profile, ...]] = ("default", "low-latency", "isolated-core")
WAIT_STRATEGIES: Final[tuple[WaitStrategy, ...]] = ("backoff", "spin")
PINNINGS: Final[tuple[Pinning, ...]] = ("none", "balanced", "isolated")

RT_PRIORITY: Final = (1, 99)
RING_CAPACITY: Final = (1024, 16_777_216)
BATCH_SIZE: Final = (1, 4096)

_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {
    "profile": PROFILES,
    "wait_strategy": WAIT_STRATEGIES,
    "pinning": PINNINGS,
}
_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "rt_priority": RT_PRIORITY,
    "ring_capacity": RING_CAPACITY,
    "batch_size": BATCH_SIZE,
}
FIELDS: Final = (
    "profile",
    "wait_strategy",
    "pinning",
    "mlockall",
    "rt_priority",
    "ring_capacity",
    "batch_size",
)
ROOT: Final = "/tuning"


class Tuning(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A profile and the overrides given (None: the profile's default applies)."""

    profile: Profile
    wait_strategy: WaitStrategy | None = None
    pinning: Pinning | None = None
    mlockall: bool | None = None
    rt_priority: int | None = None
    ring_capacity: int | None = None
    batch_size: int | None = None


class _Defaults(msgspec.Struct, frozen=True, kw_only=True):
    wait_strategy: WaitStrategy
    pinning: Pinning
    mlockall: bool
    ring_capacity: int
    batch_size: int


PROFILE_DEFAULTS: Final[Mapping[Profile, _Defaults]] = {
    "default": _Defaults(
        wait_strategy="backoff", pinning="none", mlockall=False, ring_capacity=65536, batch_size=64
    ),
    "low-latency": _Defaults(
        wait_strategy="spin", pinning="balanced", mlockall=True, ring_capacity=65536, batch_size=16
    ),
    "isolated-core": _Defaults(
        wait_strategy="spin", pinning="isolated", mlockall=True, ring_capacity=65536, batch_size=16
    ),
}


def check_tuning(data: object, findings: Findings) -> Tuning | None:
    """The typed tuning, or None after adding at least one finding to ``findings``."""
    if not isinstance(data, dict):
        findings.add("tuning_not_object", ROOT, "tuning is a JSON object with a `profile`")
        return None
    before = len(findings)
    good: dict[str, object] = {}
    for key, value in data.items():
        path = child(ROOT, key)
        if key not in FIELDS:
            findings.add("tuning_unknown_key", path, f"unknown tuning key; allowed: {FIELDS}")
        elif _check_value(key, value, path, findings):
            good[key] = value
    if "profile" not in data:
        findings.add(
            "tuning_profile_missing", child(ROOT, "profile"), f"profile is one of {PROFILES}"
        )
    _check_conflicts(good, findings)
    if len(findings) > before:
        return None
    return msgspec.convert(good, Tuning)


def _check_value(key: str, value: object, path: str, findings: Findings) -> bool:
    choices = _CHOICES.get(key)
    if choices is not None:
        if not isinstance(value, str):
            findings.add("tuning_wrong_type", path, f"{key} is a string, one of {choices}")
            return False
        if value not in choices:
            findings.add("tuning_invalid_choice", path, f"{key} is one of {choices}")
            return False
        return True
    if key == "mlockall":
        if not isinstance(value, bool):
            findings.add("tuning_wrong_type", path, "mlockall is true or false")
            return False
        return True
    low, high = _RANGES[key]
    # bool is an int subclass in Python; JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        findings.add("tuning_wrong_type", path, f"{key} is an integer")
        return False
    if not low <= value <= high:
        findings.add("tuning_out_of_range", path, f"{key} is between {low} and {high}")
        return False
    if key == "ring_capacity" and value & (value - 1):
        findings.add("tuning_not_power_of_two", path, "ring_capacity is a power of two")
        return False
    return True


def _check_conflicts(good: Mapping[str, object], findings: Findings) -> None:
    profile = good.get("profile")
    if profile is None:
        return
    isolated = profile == "isolated-core"
    if "rt_priority" in good and not isolated:
        findings.add(
            "tuning_profile_conflict",
            child(ROOT, "rt_priority"),
            "rt_priority needs the isolated-core profile",
        )
    pinning = good.get("pinning")
    if pinning == "isolated" and not isolated:
        findings.add(
            "tuning_profile_conflict",
            child(ROOT, "pinning"),
            "pinning=isolated needs the isolated-core profile",
        )
    if isolated and pinning in ("none", "balanced"):
        findings.add(
            "tuning_profile_conflict",
            child(ROOT, "pinning"),
            "the isolated-core profile pins to isolated cores",
        )
    if good.get("wait_strategy") == "backoff" and profile in ("low-latency", "isolated-core"):
        findings.add(
            "tuning_profile_conflict",
            child(ROOT, "wait_strategy"),
            f"the {profile} profile busy-polls; backoff contradicts it",
        )


def requested(tuning: Tuning) -> tuple[tuple[str, str], ...]:
    """(key, value) for every setting the agent is asked to apply, sorted by key.

    Values are rendered as KV text (``true``, ``65536``, ``spin``); ``rt_priority``
    is only present when given, because no profile sets one by default.
    """
    base = PROFILE_DEFAULTS[tuning.profile]
    values: dict[str, object] = {
        "profile": tuning.profile,
        "wait_strategy": tuning.wait_strategy or base.wait_strategy,
        "pinning": tuning.pinning or base.pinning,
        "mlockall": base.mlockall if tuning.mlockall is None else tuning.mlockall,
        "ring_capacity": tuning.ring_capacity or base.ring_capacity,
        "batch_size": tuning.batch_size or base.batch_size,
    }
    if tuning.rt_priority is not None:
        values["rt_priority"] = tuning.rt_priority
    return tuple((key, _kv(values[key])) for key in sorted(values))


def runtime_config_text(tuning: Tuning) -> str:
    """``tuning.<key>=<value>`` lines in key order with a final newline (canonical KV)."""
    return "".join(f"tuning.{key}={value}\n" for key, value in requested(tuning))


def _kv(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(cast(int | str, value))
