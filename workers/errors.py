"""The two ways a job handler can fail; the consume loop branches on the class only.

    Exception                 anything unexpected counts as Retryable
    ├── Retryable             try again after the backoff delay while attempts are left,
    │                         then dead_letter (a flaky network, Vault unreachable)
    └── Permanent             retrying cannot help: the job is failed at once
                              (a malformed spec, a missing secret)

Handlers raise these (or subclasses named for the cause: the class name is
recorded as the event's ``error_class``); the message is recorded as is, so it
must never contain a secret.
"""

from __future__ import annotations


class JobError(Exception):
    """Base of the job handler errors."""


class Retryable(JobError):
    """A transient failure: the job may succeed on a later attempt."""


class Permanent(JobError):
    """A failure no retry can fix: record ``failed`` and stop."""
