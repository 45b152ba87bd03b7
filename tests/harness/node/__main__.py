"""A real single-node Kubernetes for a developer (needs root):

    python -m tests.harness.node up      # build or reuse binaries and images, start, print KUBECONFIG, wait for Ctrl-C
    python -m tests.harness.node down    # remove what a crashed or killed `up` left on the host

`make node` runs `up`. Everything stops and the host is restored on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from .node import REPO, NODE_NAME, NodeError, cleanup, log_line, node_bin_dir, start_cluster


def up() -> int:
    subprocess.run([str(REPO / "scripts" / "build-k8s.sh")], check=True)
    subprocess.run([str(REPO / "scripts" / "build-node.sh"), "--no-images"], check=True)
    from .images import build_images
    images = build_images(binaries_dir=node_bin_dir(), log=log_line)
    try:
        plane, node = start_cluster(images=images, keep_workdir=True)
    except NodeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\nnode {NODE_NAME} is up ({', '.join(f'{k} {v:.0f}s' for k, v in node.timings.items())})\n"
          f"    export KUBECONFIG={plane.kubeconfig}\n"
          f"    kubectl get nodes,pods -A        (kubectl: {plane.binaries['kubectl']})\n"
          f"images: " + ", ".join(i.ref for i in images.values()) +
          f"\nlogs: {plane.log_dir}\nCtrl-C stops it and restores the host.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(5)
            plane.check_alive()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
        plane.stop()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down"))
    args = parser.parse_args(argv)
    if args.command == "down":
        done = cleanup(log_line)
        print("nothing to clean up" if not done else f"cleaned up {len(done)} things")
        return 0
    return up()


if __name__ == "__main__":
    sys.exit(main())
