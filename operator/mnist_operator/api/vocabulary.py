"""Words every part of the operator shares: labels, the work directory, step
states, status phases and condition values. Pure constants, no logic, so
each name has one home and nothing restates it.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from mnist_operator.api.spec import GROUP

# --------------------------------------------------------------------------- labels
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_STEP = f"{GROUP}/step"
LABEL_FINGERPRINT = f"{GROUP}/fingerprint"
LABEL_ATTEMPT = f"{GROUP}/attempt"
ANNOTATION_FINGERPRINT = f"{GROUP}/fingerprint"
#: A new value of this annotation on the resource retries a failed step from attempt 0.
RETRY_ANNOTATION = f"{GROUP}/retry"

# --------------------------------------------------------------------------- paths
#: Where the model volume is mounted in every pod (the layout of docs/CONTRACT.md).
WORK_DIR = PurePosixPath("/work")

# --------------------------------------------------------------------------- states and phases
#: Step states recorded in status.stages.<step>.state.
PENDING, RUNNING, BACKING_OFF = "Pending", "Running", "BackingOff"
SUCCEEDED, SKIPPED, FAILED = "Succeeded", "Skipped", "Failed"
FINISHED = (SUCCEEDED, SKIPPED)

#: Condition status values.
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
READY = "Ready"
#: The accuracy guard's condition (see accuracy.py).
ACCURACY = "AccuracyWithinTolerance"
#: The closed loop's verdict (applyBest): True only when the tuned 95 % interval
#: lies above the one before; reasons Improved, NoChange, Regressed, NoInterval.
IMPROVED_CONDITION = "Improved"

#: status.phase values beside the per-stage ones of stages.STAGES.
PENDING_PHASE, READY_PHASE, FAILED_PHASE = "Pending", "Ready", "Failed"
#: Every stage done and Triton scaled to 0 after its benchmark (serving.stopAfterBenchmark,
#: which a sweep sets on its points): measured, its GPUs free, not serving.
MEASURED_PHASE = "Measured"
#: The phases of a resource whose every stage is done, its figures in status.
DONE_PHASES = (READY_PHASE, MEASURED_PHASE)
