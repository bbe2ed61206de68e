"""Config bundle validation, by generation: valid bodies pass, one broken rule is one finding.

The strategies (tests/property/bundle_strategies.py) are written from the rule
tables in the modules' docstrings; a body built to follow them must validate,
seal without leaking its inline values, and hash deterministically. Each
mutation breaks exactly one rule of such a body and names the finding it
expects: the validator must report that finding and nothing else.
"""

from __future__ import annotations

import copy

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import config_bundle
from domain.adapters import InlineRef, Plaintext
from domain.findings import BundleInvalid
from tests.lifecycle import fake_encrypt
from tests.property.bundle_strategies import MUTATIONS, Body, valid_bodies

SETTINGS = settings(max_examples=200, deadline=None)


def validate(body: Body) -> config_bundle.UnsealedBundle:
    return config_bundle.validate_bundle(body["tuning"], body["adapters"], body["parameters"])


@SETTINGS
@given(valid_bodies())
def test_generated_valid_bundles_pass_and_seal_without_plaintext(body: Body) -> None:
    unsealed = validate(body)
    assert [a.name for a in unsealed.adapters] == [a["name"] for a in body["adapters"]]
    content = config_bundle.seal(unsealed, fake_encrypt)
    encoded = msgspec.json.encode(content)
    for adapter, raw in zip(content.adapters, body["adapters"], strict=True):
        for field, ref in raw.get("secretRefs", {}).items():
            sealed = adapter.secret_refs[field]
            if ref["kind"] == "inline":
                # only the key id and the ciphertext are stored: never a value field
                assert isinstance(sealed, InlineRef)
                assert set(msgspec.to_builtins(sealed)) == {"kind", "key_id", "ciphertext"}
                assert sealed == fake_encrypt(ref["value"].encode(), "")
            else:
                assert msgspec.to_builtins(sealed) == ref
    decoded = msgspec.json.decode(encoded, type=config_bundle.BundleContent)
    assert decoded == content
    assert config_bundle.content_hash(decoded) == config_bundle.content_hash(content)
    assert all(
        not isinstance(r, Plaintext) for a in content.adapters for r in a.secret_refs.values()
    )


@SETTINGS
@given(valid_bodies(), st.sampled_from(MUTATIONS), st.data())
def test_one_broken_rule_gives_exactly_its_finding(
    body: Body, mutation: object, data: st.DataObject
) -> None:
    broken = copy.deepcopy(body)
    assert callable(mutation)
    code, path = mutation(broken, data.draw)
    try:
        validate(broken)
    except BundleInvalid as exc:
        assert [(f.code, f.path) for f in exc.findings] == [(code, path)]
        assert exc.errors[0].path == path
    else:
        raise AssertionError(f"{mutation.__name__} was accepted: {broken}")  # type: ignore[attr-defined]
