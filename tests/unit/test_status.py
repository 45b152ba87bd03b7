"""Conditions per the Kubernetes API conventions (status.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mnist_operator.core.status import (camel_reason, get_condition, one_line, ordered,
                                   parse_timestamp, set_condition, stage_condition, timestamp)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_has_every_field():
    (c,) = set_condition([], "Trained", "False", "Running", "Job x running", 3, T0)
    assert c == {"type": "Trained", "status": "False", "reason": "Running",
                 "message": "Job x running", "lastTransitionTime": "2025-03-01T12:00:00Z",
                 "observedGeneration": 3}


def test_transition_time_kept_while_status_unchanged():
    first = set_condition([], "Ready", "False", "Progressing", "train running", 1, T0)
    again = set_condition(first, "Ready", "False", "StageFailed", "train failed", 2, T1)
    c = get_condition(again, "Ready")
    assert c["lastTransitionTime"] == timestamp(T0)
    assert (c["reason"], c["message"], c["observedGeneration"]) == ("StageFailed", "train failed", 2)


def test_transition_time_moves_when_status_changes():
    first = set_condition([], "Ready", "False", "Progressing", "", 1, T0)
    flipped = set_condition(first, "Ready", "True", "Ready", "serving", 1, T1)
    assert get_condition(flipped, "Ready")["lastTransitionTime"] == timestamp(T1)


def test_input_list_is_not_mutated_and_others_keep_their_place():
    conds = set_condition([], "Ready", "False", "Progressing", "", 1, T0)
    conds = set_condition(conds, "Trained", "False", "Running", "", 1, T0)
    snapshot = [dict(c) for c in conds]
    out = set_condition(conds, "Ready", "True", "Ready", "", 1, T1)
    assert conds == snapshot
    assert [c["type"] for c in out] == ["Ready", "Trained"]


def test_status_must_be_true_false_or_unknown():
    with pytest.raises(ValueError, match="True, False or Unknown"):
        set_condition([], "Ready", "yes", "Ready", "", 1, T0)


@pytest.mark.parametrize("raw,reason", [("exit code", "ExitCode"), ("OOMKilled", "OOMKilled"),
                                        ("", "Unknown"), ("3rd-try", "RdTry")])
def test_reasons_are_camel_case(raw, reason):
    assert camel_reason(raw) == reason
    (c,) = set_condition([], "Ready", "False", raw, "", 1, T0)
    assert c["reason"] == reason


def test_messages_are_one_line():
    (c,) = set_condition([], "Ready", "False", "X", "line one\nline two\t end", 1, T0)
    assert c["message"] == "line one line two end"
    assert len(one_line("x" * 5000)) == 1024


def test_ready_first_then_pipeline_order():
    types = ["Analyzed", "Trained", "Ready", "Serving"]
    conds = [{"type": t} for t in types]
    assert [c["type"] for c in ordered(conds)] == ["Ready", "Trained", "Serving", "Analyzed"]


def test_timestamps_round_trip_both_spellings():
    assert parse_timestamp(timestamp(T0)) == T0
    assert parse_timestamp("2025-03-01T12:00:00+00:00") == T0
    assert parse_timestamp("not a time") is None and parse_timestamp(None) is None


def test_stage_condition_from_step_records():
    assert stage_condition([], "train")[0] == "Unknown"
    ok = {"state": "Succeeded", "message": "accuracy 0.98"}
    assert stage_condition([ok], "train") == ("True", "Succeeded", "accuracy 0.98")
    skipped = {"state": "Skipped", "reason": "TensorRTNotAvailable", "message": "no trt"}
    # a skipped engine was not built: False, with the skip's reason
    assert stage_condition([skipped], "engine") == ("False", "TensorRTNotAvailable", "no trt")
    assert stage_condition([{"state": "Skipped"}], "engine") == \
        ("False", "Skipped", "engine skipped")
    # one protocol skipped beside one that succeeded: the stage did its work
    assert stage_condition([skipped, ok], "bench") == ("True", "Succeeded", "accuracy 0.98")
    failed = {"state": "Failed", "reason": "OOMKilled", "message": "exit code 137"}
    assert stage_condition([ok, failed], "bench") == ("False", "OOMKilled", "exit code 137")
    running = {"state": "Running", "reason": "JobRunning", "message": "Job b running"}
    assert stage_condition([ok, running], "bench") == ("False", "Running", "Job b running")
    backing = {"state": "BackingOff", "reason": "ExitCode", "message": "retrying in 30s"}
    assert stage_condition([backing], "train")[:2] == ("False", "ExitCode")
