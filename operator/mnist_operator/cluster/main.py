"""``mnist-serving operator [--namespace NS ...|--all-namespaces] [--liveness URL]
[--metrics-port N] [--leader-lease NAME [--leader-namespace NS]]``: run the operator
(kopf) against the current cluster.

Environment (the Helm chart sets it; see api/site_defaults.py): the operator-wide
defaults ``MNIST_SERVING_DEFAULT_*`` fill the fields a resource leaves out, and
``MNIST_SERVING_WATCH_NAMESPACES`` ("a,b") picks the namespaces when neither
``--namespace`` nor ``--all-namespaces`` is given. With a leader Lease
(``--leader-lease`` or ``MNIST_SERVING_LEADER_LEASE``) the process first stands by
until it holds that Lease (leader.py): ``POD_NAME`` is its identity there and
``POD_NAMESPACE`` the Lease's namespace (the downward API, in the chart).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import kopf

from mnist_operator.api import site_defaults
from mnist_operator.cluster import kube, leader, metrics
from mnist_operator.cluster.handlers import OPERATOR


#: environment default of --leader-lease
LEADER_LEASE = "MNIST_SERVING_LEADER_LEASE"


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
    p.add_argument("--leader-lease", metavar="NAME", default=os.environ.get(LEADER_LEASE) or None,
                   help="act only while holding this coordination.k8s.io Lease (a second "
                        "replica stands by and takes over when it expires); default "
                        f"${LEADER_LEASE}, else no election (one replica only)")
    p.add_argument("--leader-namespace", metavar="NS", default=None,
                   help=f"the Lease's namespace (default ${leader.POD_NAMESPACE}, else the "
                        "service account's namespace)")
    p.add_argument("--verbose", action="store_true", help="log debug messages")
    return p


def namespaces_to_watch(args: argparse.Namespace, environ=os.environ) -> list[str]:
    """Flags first, then MNIST_SERVING_WATCH_NAMESPACES; [] means every namespace."""
    if args.namespace or args.all_namespaces:
        return list(args.namespace)
    return site_defaults.watch_namespaces(environ)


def _stop_standing_by(signum, frame):
    raise KeyboardInterrupt(f"signal {signum} while standing by")


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
    elector = None
    if args.leader_lease:
        lease_ns = args.leader_namespace or leader.lease_namespace()
        if not lease_ns:
            print("mnist-serving operator: error: --leader-lease needs --leader-namespace or "
                  f"${leader.POD_NAMESPACE}", file=sys.stderr)
            return 2
        metrics.set_leader(False)
        logging.getLogger("mnist_operator").info(
            "leader election on Lease %s/%s as %s", lease_ns, args.leader_lease, leader.identity())
        elector = leader.Elector(kube.api_client(connections=2), lease_ns, args.leader_lease,
                                 leader.identity())
        probe = leader.StandbyProbe(args.liveness)  # the kubelet's probe passes while standing by
        # A standby is stopped by SIGTERM (kopf, which handles it for a leader, has not
        # started). In a container it is PID 1, and the kernel drops a signal PID 1 has
        # no handler for: without this a standby sat out the pod's whole grace period
        # (30 s) on every `helm upgrade`, drain or scale-down, and was then SIGKILLed.
        previous = signal.signal(signal.SIGTERM, _stop_standing_by)
        try:
            elector.wait_until_leading()
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            probe.close()
        elector.keep_renewing()
    # standalone: no kopf peering; with a Lease, only its holder gets this far
    try:
        kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
                 liveness_endpoint=args.liveness)
    finally:
        if elector is not None:
            elector.release()
    return 0


__all__ = ["main", "parser", "namespaces_to_watch"]
