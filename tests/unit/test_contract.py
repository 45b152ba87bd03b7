"""docs/CONTRACT.md's stage command lines are generated from the stage CLIs, and
every flag the operator passes is one the stage accepts."""
from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_operator.api.stage_table import STAGES
from mnist_operator.core import pipeline
from tests.harness.stage_flags import WHERE

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gen_contract", ROOT / "scripts" / "gen-contract.py")
gen_contract = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_contract)

#: the flag the builders add to every step's own: where the result goes
ADDED_BY_BUILDERS = {"--result"}


def test_the_contract_page_is_what_the_stage_clis_say():
    page = (ROOT / "docs" / "CONTRACT.md").read_text()
    assert gen_contract.written(page) == page, \
        "docs/CONTRACT.md's stage command lines are stale: run `make docs`"


def test_the_generator_prints_every_stage():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-contract.py")],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert [line for line in out.splitlines() if line.startswith("### ")] == [
        f"### `python -m mnist_jobs.{s.name}`" for s in STAGES]


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_the_operator_passes_only_flags_the_stage_accepts_and_every_one_it_requires(stage):
    params = getattr(pipeline, f"{stage.capitalize()}Params")
    passed = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(params)}
    actions = [a for a in gen_contract.stage_parser(stage)._actions if a.option_strings]
    accepted = {flag for a in actions for flag in a.option_strings}
    required = {max(a.option_strings, key=len) for a in actions if a.required}
    assert passed - accepted == set(), f"{stage}: the operator passes flags the CLI refuses"
    assert required - passed - ADDED_BY_BUILDERS == set(), f"{stage}: a required flag is never passed"


#: A stage may default where files and endpoints are (the builders choose them from the
#: layout), and a repeated flag whose absence is a value (no override).
MAY_DEFAULT = WHERE | {"--override"}


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_a_stage_has_no_default_of_its_own_for_what_the_spec_decides(stage):
    """The spec model is the one home of every default: a flag the operator always passes
    (a Params field that is never None) is required by the stage, so a hand run cannot
    quietly use another value than the resource would."""
    params = getattr(pipeline, f"{stage.capitalize()}Params")
    always = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(params)
              if f.default not in (None, False)}
    actions = {max(a.option_strings, key=len): a for a in gen_contract.stage_parser(stage)._actions
               if a.option_strings}
    defaulted = {flag for flag in always - MAY_DEFAULT if not actions[flag].required}
    assert defaulted == set(), f"{stage}: the CLI has its own default for {sorted(defaulted)}"
