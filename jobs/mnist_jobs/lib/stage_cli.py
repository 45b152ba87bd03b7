"""What every stage CLI shares: the result contract and failure handling.

A stage is a CLI: arguments and paths in, artifacts on disk, and ONE small
JSON result out. In Kubernetes the result path is the container's
termination message (``/dev/termination-log``, 4 KiB), so results stay
compact and hold numbers as strings or integers (API conventions: no floats).

Exit codes: 0 succeeded or skipped, 1 the stage failed, 2 bad input.
On failure stderr gets exactly one line, ``<stage>: error: <message>``, and
the result file still gets written with ``state: Failed`` so the operator
can copy the reason into status.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

RESULT_LIMIT_BYTES = 4096  # size of a Kubernetes termination message

SUCCEEDED, SKIPPED, FAILED = "Succeeded", "Skipped", "Failed"
#: The fields every result has (reason and message: Skipped and Failed; the success
#: message of a stage that has one) beside the stage's own RESULT_FIELDS.
COMMON_RESULT_FIELDS = {
    "stage": "the stage's name", "state": "Succeeded, Skipped or Failed",
    "reason": "a CamelCase reason (Skipped, Failed)", "message": "one line, in words",
    "durationSeconds": "the stage's run time",
}


class StageError(Exception):
    """A failure worth one line to the user; ``reason`` is CamelCase for status."""

    exit_code = 1

    def __init__(self, message: str, reason: str = "StageFailed"):
        super().__init__(message)
        self.reason = reason


class InputError(StageError):
    """Bad input: the message names the offending argument or field."""

    exit_code = 2

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", reason="InvalidInput")
        self.field = field


class Skipped(Exception):
    """The stage cannot run here and that is fine (e.g. no TensorRT)."""

    def __init__(self, message: str, reason: str, **fields: Any):
        super().__init__(message)
        self.reason = reason
        self.fields = fields


def fmt(value: float, digits: int = 4) -> str:
    """A float as a string, the way results and status carry non-integers."""
    return f"{value:.{digits}f}"


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m mnist_jobs.{stage}", description=description)
    parser.add_argument(
        "--result",
        type=Path,
        help="write the stage's JSON result here (in Kubernetes: /dev/termination-log)",
    )
    return parser


class _Parser(argparse.ArgumentParser):
    # argparse exits with a usage block; we want one line naming the field.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError("arguments", message)


def write_result(path: Path | None, result: dict[str, Any]) -> str:
    text = json.dumps(result, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > RESULT_LIMIT_BYTES:
        raise StageError(
            f"result is {len(text.encode())} bytes, over the {RESULT_LIMIT_BYTES}-byte "
            "termination-message limit", reason="ResultTooLarge")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


def run_stage(
    stage: str,
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], dict[str, Any]],
    argv: list[str] | None = None,
) -> int:
    """Parse arguments, run ``body``, write the result; return the exit code.

    ``body`` returns the stage-specific fields of a successful result, raises
    :class:`Skipped` for a clean skip, and :class:`StageError` (or
    :class:`InputError`) for a failure with a one-line reason.
    """
    started = time.time()
    result_path: Path | None = None
    try:
        args = parser.parse_args(argv)
        result_path = args.result
        fields = body(args)
        result = {"stage": stage, "state": SUCCEEDED, **fields}
        code = 0
    except Skipped as skip:
        result = {"stage": stage, "state": SKIPPED, "reason": skip.reason,
                  "message": str(skip), **skip.fields}
        print(f"{stage}: skipped: {skip}", file=sys.stderr)
        code = 0
    except StageError as err:
        result = {"stage": stage, "state": FAILED, "reason": err.reason, "message": str(err)}
        print(f"{stage}: error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        result = {"stage": stage, "state": FAILED, "reason": "Interrupted",
                  "message": "interrupted"}
        print(f"{stage}: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # a bug: keep the traceback, still report one line
        traceback.print_exc()
        result = {"stage": stage, "state": FAILED, "reason": "UnexpectedError",
                  "message": f"{type(exc).__name__}: {exc}"[:512]}
        print(f"{stage}: error: {result['message']}", file=sys.stderr)
        code = 1
    result["durationSeconds"] = int(round(time.time() - started))
    try:
        text = write_result(result_path, result)
    except StageError as err:  # an oversized result is a bug in the stage
        print(f"{stage}: error: {err}", file=sys.stderr)
        return 1
    print(text)
    return code
