"""The user-facing pages' commands as a newcomer types them, run on the real
node (test_node_e2e.py, once the CPU sample is Ready). They are read from the
pages (README.md and the docs/ pages in PAGES) at test time, never copied;
`for_this_node` lists the only substitutions made, each because this tier
differs from the kind walkthrough the pages describe.

`commands()` finds every kubectl command (and the `mnist-serving compare
--cluster` one) in the pages' shell blocks and inline code; a test checks that
each is run here or named in NOT_HERE with the reason, so a command added to a
page later is either checked on the node or its absence explained.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .node import REPO

README = REPO / "README.md"
#: The user-facing pages: the README and the topic pages under docs/ (not
#: BENCHMARKS.md or CONTRACT.md, which are records, not instructions). Every
#: reader of the marked blocks and the commands uses this list.
PAGES = (README, *(REPO / "docs" / f"{page}.md" for page in (
    "local-run", "install", "results", "closed-loop", "defaults-and-security",
    "troubleshooting", "reference", "architecture", "tests", "sweeps")))
#: NGC's image the README's client pod runs; this node has only the stand-in (no registry, no NGC)
NGC_SDK = "nvcr.io/nvidia/tritonserver:26.04-py3-sdk"
#: the context the kind walkthrough's commands name (hack/kind/create-cluster.sh's cluster)
KIND_CONTEXT = "kind-mnist-serving"
#: verbs that change the cluster: the tier's fixtures do the install and the apply themselves
CHANGING = {"apply", "create", "delete", "annotate", "patch", "run", "label", "edit", "scale"}
READING = {"get", "describe", "wait", "explain", "logs"}
#: read-only commands of the pages (as written) this tier does not run, and why
NOT_HERE = {
    "kubectl": "a word in prose, not a command",
    "kubectl get": "a word in prose, not a command",
    "kubectl get -o yaml": "a fragment in prose (the CRD carries no defaults)",
    "kubectl wait": "a fragment in prose (the client pod's wait is run with its block)",
    "kubectl describe pod": "a fragment in prose (what the scheduler's message looks like)",
    "kubectl describe pod mnist-client": "for a client pod that never finishes; the block's run deletes it",
    "kubectl logs mnist-client": "for a client pod that never finishes; the block runs it",
    f"kubectl --context {KIND_CONTEXT} -n gpu-operator get pods": "no GPU Operator on this node (no GPU)",
    "kubectl get lease": "a word in prose (architecture.md); troubleshooting's command with "
                         "the operator's namespace is checked",
    "kubectl get mnistsweep": "the pages' sweep needs GPUs; this tier's CPU sweep "
                              "(tests/node/test_node_sweep.py) and tests/cluster/test_sweep_e2e.py "
                              "check this command's columns for their own sweeps",
    "kubectl get mnist -l mnist.serving.dev/sweep=which-gpu":
        "the pages' sweep needs GPUs; tests/node/test_node_sweep.py and "
        "tests/cluster/test_sweep_e2e.py list their own sweeps' points by this label",
}


def _without(text: str, *names: str) -> str:
    for name in names:
        text = re.sub(rf"<!-- {name}:begin.*?<!-- {name}:end -->", "", text, flags=re.S)
    return text


def page_holding(name: str) -> Path:
    """The one page that holds the block `<!-- NAME:begin ... -->`."""
    holders = [p for p in PAGES if re.search(rf"<!-- {name}:begin\b", p.read_text())]
    assert len(holders) == 1, f"the {name} block is in {len(holders)} pages, not one: {holders}"
    return holders[0]


def block(name: str, text: str | None = None) -> str:
    """The shell block between `<!-- NAME:begin -->` and `<!-- NAME:end -->`, in
    whichever page holds it (or in `text`)."""
    text = page_holding(name).read_text() if text is None else text
    m = re.search(rf"<!-- {name}:begin -->\n```sh\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert m, f"no {name} shell block"
    return m.group(1)


def commands(text: str | None = None) -> list[str]:
    """Every kubectl (and cluster-wide compare) command in the pages (or in
    `text`), whitespace joined, but the client block (run whole), the resource
    reference and the recorded `kubectl get` output (its resource is the test
    suite's `sample`). Each page is read on its own, so an inline code span
    never pairs across two pages."""
    if text is None:
        found = [c for page in PAGES for c in commands(page.read_text())]
        return list(dict.fromkeys(found))
    text = _without(text, "client-command", "reference", "kubectl-get")
    found: list[str] = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line).strip()  # a trailing comment
            if line.startswith("kubectl ") or line.startswith("mnist-serving compare --cluster -A"):
                found.append(" ".join(line.split()))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if span == "kubectl" or span.startswith("kubectl "):
            found.append(span)
    return list(dict.fromkeys(found))


def changes_the_cluster(command: str) -> bool:
    verb = next((w for w in command.split()[1:] if w in CHANGING | READING), None)
    return verb in CHANGING


def for_this_node(text: str, *, name: str, sdk_image: str | None = None,
                  job_args: dict[str, str] | None = None) -> str:
    """A page's text with the node tier's substitutions, each asserted to apply."""
    # 1. The walkthrough's sample is `demo` (GPU); this node runs the CPU sample `cpu-demo`.
    #    `NAME` is the troubleshooting section's placeholder for the resource's name.
    text = re.sub(r"\bdemo\b", name, text)
    text = re.sub(r"\bmnist NAME\b", f"mnist {name}", text)
    if sdk_image is not None:
        # 2. NGC's SDK image -> the stand-in with its entry points and paths (no NGC here).
        assert text.count(NGC_SDK) == 1, "the client pod's image is no longer NGC's SDK image"
        text = text.replace(NGC_SDK, sdk_image)
    for flag, value in (job_args or {}).items():
        # 3. The flags that depend on the resource, from its own client Job: the CPU sample
        #    serves no TensorRT engine (`--models` without mnist_trt), and trains on the
        #    offline dataset, which train left on the model volume (`--data-source offline`
        #    for `download`: this node reaches no internet).
        text, n = re.subn(rf'({re.escape(flag)},\s*)("[^"]*"|[^,\]\s]+)', rf'\g<1>"{value}"', text)
        assert n == 1, f"the client pod's command has no single {flag}"
    # 4. The namespace: none is named; the kubeconfig's context sets it (see Shell).
    return text


@dataclass
class Result:
    rc: int | None       # None: still running at the timeout (killed)
    out: str
    err: str


class Shell:
    """bash with the node's kubectl on PATH and a kubeconfig whose current context,
    and one named as the kind walkthrough's (`kind-mnist-serving`), use the test's
    namespace: the pages' commands run as written, in that namespace."""

    def __init__(self, plane, namespace: str, workdir: Path):
        self.workdir = workdir
        bin_dir = workdir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        link = bin_dir / "kubectl"
        if not link.exists():
            link.symlink_to(plane.binaries["kubectl"])
        doc = yaml.safe_load(Path(plane.kubeconfig).read_text())
        current = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])
        current["context"]["namespace"] = namespace
        doc["contexts"].append({"name": KIND_CONTEXT, "context": dict(current["context"])})
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(doc))
        self.kubeconfig.chmod(0o600)
        # the venv's mnist-serving for the compare command
        path = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        self.env = {**os.environ, "PATH": path, "KUBECONFIG": str(self.kubeconfig)}

    def __call__(self, script: str, timeout: float = 60) -> Result:
        # its own process group: a timeout ends kubectl too, not only bash
        p = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=self.workdir, env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
            return Result(p.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            return Result(None, out, err)
