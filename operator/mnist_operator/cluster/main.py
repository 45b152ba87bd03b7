"""``mnist-serving operator [--namespace NS ...|--all-namespaces] [--liveness URL]
[--metrics-port N]``: run the operator (kopf) against the current cluster.

Environment (the Helm chart sets it; see api/site_defaults.py): the operator-wide
defaults ``MNIST_SERVING_DEFAULT_*`` fill the fields a resource leaves out, and
``MNIST_SERVING_WATCH_NAMESPACES`` ("a,b") picks the namespaces when neither
``--namespace`` nor ``--all-namespaces`` is given.
"""
from __future__ import annotations

import argparse
import os
import sys

import kopf

from mnist_operator.api import site_defaults
from mnist_operator.cluster import metrics
from mnist_operator.cluster.handlers import OPERATOR


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnist-serving operator",
                                description="Run the MnistServing operator (kopf) against the "
                                            "cluster of the current kubeconfig or service account.")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; glob patterns as kopf allows)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace (the default when no --namespace is given "
                            f"and ${site_defaults.WATCH_NAMESPACES} is empty)")
    p.add_argument("--liveness", metavar="URL", default=None,
                   help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-port", type=int, default=metrics.DEFAULT_PORT, metavar="PORT",
                   help="serve Prometheus metrics at http://0.0.0.0:PORT/metrics "
                        f"(default {metrics.DEFAULT_PORT}; 0 turns them off)")
    p.add_argument("--verbose", action="store_true", help="log debug messages")
    return p


def namespaces_to_watch(args: argparse.Namespace, environ=os.environ) -> list[str]:
    """Flags first, then MNIST_SERVING_WATCH_NAMESPACES; [] means every namespace."""
    if args.namespace or args.all_namespaces:
        return list(args.namespace)
    return site_defaults.watch_namespaces(environ)


def main(argv: list[str] | None = None, operator=OPERATOR) -> int:
    args = parser().parse_args(argv)
    try:
        operator.defaults()
    except ValueError as err:
        print(f"mnist-serving operator: error: {err}", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose)
    operator.metrics_port = args.metrics_port
    try:
        metrics.serve(args.metrics_port)
    except OSError as err:
        print(f"mnist-serving operator: error: --metrics-port {args.metrics_port}: {err}",
              file=sys.stderr)
        return 2
    namespaces = namespaces_to_watch(args)
    operator.namespaces = namespaces
    operator.static_namespaces = bool(namespaces) and not any(
        ch in ns for ns in namespaces for ch in "*?[!")
    # One replica with a Recreate strategy: no peering needed.
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=args.liveness)
    return 0


__all__ = ["main", "parser", "namespaces_to_watch"]
