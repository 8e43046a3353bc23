"""Which MESSAGE asks the soft phone to answer a ringing call (pure)."""

from __future__ import annotations

from softphone.sip.invite import REMOTE_ANSWER_TYPE, remote_answer_call_id


def test_a_remote_answer_message_names_the_ringing_invites_call_id() -> None:
    assert remote_answer_call_id(REMOTE_ANSWER_TYPE, " abc123@cms \r\n") == "abc123@cms"
    assert remote_answer_call_id(f"{REMOTE_ANSWER_TYPE}; charset=utf-8", "x@y") == "x@y"


def test_other_messages_and_garbage_answer_nothing() -> None:
    assert remote_answer_call_id("text/plain", "abc123@cms") is None
    assert remote_answer_call_id(REMOTE_ANSWER_TYPE, "") is None
    assert remote_answer_call_id(REMOTE_ANSWER_TYPE, "a\nb") is None
    assert remote_answer_call_id(REMOTE_ANSWER_TYPE, "x" * 300) is None
