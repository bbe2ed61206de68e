"""Job engine tuning from the environment: BYTEOR_CLOUD_JOB_SETTINGS and friends."""

from __future__ import annotations

import pytest

from domain.backoff import Backoff
from ops.config import ConfigError, Settings
from workers.streams import DEFAULT_JOB_TYPES, JobTypeTuning, tuned


def test_the_defaults_leave_the_job_types_alone() -> None:
    settings = Settings.from_env({})
    assert (settings.worker_concurrency, settings.job_settings) == (4, {})
    assert (settings.reconcile_grace_s, settings.reconcile_interval_s) == (300.0, 30.0)
    assert tuned(DEFAULT_JOB_TYPES, settings.job_settings) == DEFAULT_JOB_TYPES


def test_overrides_replace_only_the_fields_given() -> None:
    settings = Settings.from_env(
        {
            "BYTEOR_CLOUD_JOB_SETTINGS": '{"probe": {"ack_wait_s": 2, "max_attempts": 5,'
            ' "backoff_base_s": 0.2}}',
            "BYTEOR_CLOUD_WORKER_CONCURRENCY": "16",
            "BYTEOR_CLOUD_RECONCILE_GRACE_S": "2.5",
            "BYTEOR_CLOUD_RECONCILE_INTERVAL_S": "0.5",
        }
    )
    assert settings.worker_concurrency == 16
    assert (settings.reconcile_grace_s, settings.reconcile_interval_s) == (2.5, 0.5)
    types = {s.job_type: s for s in tuned(DEFAULT_JOB_TYPES, settings.job_settings)}
    default = {s.job_type: s for s in DEFAULT_JOB_TYPES}["probe"]
    probe = types["probe"]
    assert (probe.ack_wait_s, probe.max_attempts) == (2.0, 5)
    assert probe.backoff == Backoff(
        base_s=0.2, factor=default.backoff.factor, cap_s=default.backoff.cap_s
    )
    assert probe.max_ack_pending == default.max_ack_pending
    assert {k: v for k, v in types.items() if k != "probe"} == {
        s.job_type: s for s in DEFAULT_JOB_TYPES if s.job_type != "probe"
    }


def test_an_override_of_an_unknown_job_type_is_refused() -> None:
    with pytest.raises(ValueError, match="no such job type: nope"):
        tuned(DEFAULT_JOB_TYPES, {"nope": JobTypeTuning(max_attempts=2)})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("JOB_SETTINGS", "not json", "BYTEOR_CLOUD_JOB_SETTINGS: expected a JSON object"),
        ("JOB_SETTINGS", '{"probe": {"ack_wait": 2}}', "unknown field `ack_wait`"),
        ("JOB_SETTINGS", '{"probe": {"max_attempts": 0}}', "BYTEOR_CLOUD_JOB_SETTINGS"),
        ("WORKER_CONCURRENCY", "0", "BYTEOR_CLOUD_WORKER_CONCURRENCY"),
        ("RECONCILE_GRACE_S", "-1", "BYTEOR_CLOUD_RECONCILE_GRACE_S"),
        ("RECONCILE_INTERVAL_S", "soon", "BYTEOR_CLOUD_RECONCILE_INTERVAL_S"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env({f"BYTEOR_CLOUD_{name}": value})
