"""``mnist-serving``: one entry point, a subcommand per job.

  run FILE       the whole pipeline on this machine, no cluster (local runner)
  render FILE    print every object the operator would create (like helm template)
  crd            print the CustomResourceDefinition generated from the spec model
  operator       run the kopf operator (what the operator image starts)
  compare ...    gather results of local runs and/or cluster resources into one table + plot

Each subcommand lives in its own module and is imported only when chosen, so
``render`` and ``crd`` start without torch or the Kubernetes client.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("mnist_operator.local.runner", "the whole pipeline on this machine (no cluster)"),
    "render": ("mnist_operator.tools.render", "print every object the operator would create"),
    "crd": ("mnist_operator.tools.crd", "print the generated CustomResourceDefinition"),
    "operator": ("mnist_operator.cluster.main", "run the operator (kopf) against the current cluster"),
    "compare": ("mnist_operator.tools.compare", "one table and plot from many runs or resources"),
    "report": ("mnist_operator.tools.report", "one HTML page (offline) from runs, sweeps or resources"),
    "reference": ("mnist_operator.tools.reference", "print the resource reference (docs/reference.md)"),
}


def usage() -> str:
    lines = ["usage: mnist-serving COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`mnist-serving COMMAND --help` for the arguments of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mnist-serving: error: unknown command {name!r} (one of: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
