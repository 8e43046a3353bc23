"""Pure pieces of call control: the attached-data merge patch (RFC 7396)."""

from __future__ import annotations

from cms.calls.views import merge_patch


def test_merge_patch_replaces_adds_and_null_deletes() -> None:
    assert merge_patch({"a": 1, "b": 2}, {"a": 3, "b": None, "c": 4}) == {"a": 3, "c": 4}


def test_merge_patch_merges_nested_objects_and_replaces_arrays() -> None:
    target = {"customer": {"name": "Ann", "tier": "gold"}, "tags": [1, 2]}
    patch = {"customer": {"tier": None, "id": 7}, "tags": [3]}
    assert merge_patch(target, patch) == {"customer": {"name": "Ann", "id": 7}, "tags": [3]}


def test_merge_patch_object_over_a_scalar_starts_fresh_and_leaves_target_untouched() -> None:
    target = {"a": "text"}
    assert merge_patch(target, {"a": {"b": 1, "c": None}}) == {"a": {"b": 1}}
    assert target == {"a": "text"}


def test_merge_patch_deleting_a_missing_key_is_no_error() -> None:
    assert merge_patch({}, {"gone": None}) == {}
