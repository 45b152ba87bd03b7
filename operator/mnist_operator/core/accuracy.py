"""The accuracy guard: every served variant's held-out accuracy next to PyTorch's.

Pure. The train stage measures the PyTorch model on the held-out digits; the
client stage sends the same held-out digits to every served Triton model over
each protocol. A variant whose worst protocol is more than the spec's
tolerance below PyTorch (a TensorRT fp16 engine that lost digits, say) is
*below tolerance*: the resource says so in a condition and an event, and the
closed loop never serves a tuned configuration of it.

A record is a stage result or the status record that holds one under
``result``; only Succeeded records count.
"""
from __future__ import annotations

from dataclasses import dataclass

from mnist_operator.api.vocabulary import FALSE, SUCCEEDED, TRUE, UNKNOWN


@dataclass(frozen=True)
class Judgement:
    reference: float                  # PyTorch's held-out accuracy (train stage)
    tolerance: float                  # the largest drop allowed
    worst: dict[str, float]           # Triton model -> its lowest accuracy over the protocols

    @property
    def below(self) -> tuple[str, ...]:
        return tuple(m for m, acc in sorted(self.worst.items())
                     if acc < self.reference - self.tolerance - 1e-12)


def _fields(recorded: dict | None) -> dict:
    if not recorded or recorded.get("state") != SUCCEEDED:
        return {}
    return {**recorded, **(recorded.get("result") or {})}


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def judge(records: dict[str, dict], tolerance: float) -> Judgement | None:
    """The guard's verdict from the train and client records, or None until both succeeded."""
    reference = _number(_fields(records.get("train")).get("accuracy"))
    measured = _fields(records.get("client")).get("accuracy") or {}
    worst = {}
    for model, per_protocol in measured.items():
        values = [v for v in map(_number, (per_protocol or {}).values()) if v is not None]
        if values:
            worst[model] = min(values)
    if reference is None or not worst:
        return None
    return Judgement(reference, tolerance, worst)


def condition(verdict: Judgement | None) -> tuple[str, str, str]:
    """(status, reason, message) of the AccuracyWithinTolerance condition."""
    if verdict is None:
        return UNKNOWN, "NotMeasured", "waits for the train and client stages' held-out accuracy"
    worst = ", ".join(f"{m} {acc:.4f}" for m, acc in sorted(verdict.worst.items()))
    against = f"PyTorch {verdict.reference:.4f}, tolerance {verdict.tolerance:g}"
    if verdict.below:
        return (FALSE, "BelowTolerance",
                f"{', '.join(verdict.below)} below PyTorch's held-out accuracy by more than the "
                f"tolerance ({worst}; {against}); the closed loop leaves them as served")
    return TRUE, "WithinTolerance", f"every served model within tolerance ({worst}; {against})"


def below_tolerance(records: dict[str, dict], tolerance: float) -> frozenset[str]:
    verdict = judge(records, tolerance)
    return frozenset(verdict.below) if verdict else frozenset()


__all__ = ["Judgement", "judge", "condition", "below_tolerance"]
