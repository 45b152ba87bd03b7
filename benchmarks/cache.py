"""The operator's watch-fed cache at N Ready resources: memory and one pass's read.

    .venv/bin/python benchmarks/cache.py            # N=1000; writes docs/BENCHMARKS.md
    .venv/bin/python benchmarks/cache.py --n 500 --no-write

One resource is walked through the whole pipeline by the pure core (the unit tier's
simulated API server, tests/unit/test_reconcile.World); its body and children, as the API
server would serve them (managed fields, full pod specs), are put N times into
`ClusterCache` under N names. Beside it, the same slim copies held as parsed dicts (what
the cache kept before it kept compact JSON) give the ratio in the same run. Memory is
tracemalloc's (Python objects only, not RSS); the read is `children` + `resource`, what a
pass asks the cache.
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import timeit
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "unit"), str(ROOT / "operator"), str(ROOT / "jobs"),
                str(ROOT), str(ROOT / "benchmarks")]

from serving import replace_section  # noqa: E402
from test_cache import served_children  # noqa: E402
from test_reconcile import ALL_STEPS, World  # noqa: E402

from mnist_operator.cluster.cache import KINDS, ClusterCache, slim  # noqa: E402
from mnist_operator.api.vocabulary import LABEL_INSTANCE  # noqa: E402
from mnist_operator.core.builders import instance_label  # noqa: E402

HEADING = "## Operator cache"


class ParsedDicts:
    """The same slim copies kept as parsed dicts, read by deep copy."""

    def __init__(self) -> None:
        self.resources: dict[str, dict] = {}
        self.children: dict[str, dict[str, dict]] = {}

    def put_resource(self, body: dict) -> None:
        meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        self.resources[body["metadata"]["name"]] = {**body, "metadata": meta}

    def put(self, body: dict) -> None:
        label = body["metadata"]["labels"][LABEL_INSTANCE]
        self.children.setdefault(label, {})[body["metadata"]["name"]] = copy.deepcopy(
            slim(body["kind"], body))

    def read(self, cr: dict) -> tuple:
        kids = self.children.get(instance_label(cr["metadata"]["name"]), {})
        return ([copy.deepcopy(kids[n]) for n in sorted(kids)],
                copy.deepcopy(self.resources[cr["metadata"]["name"]]))


class Compact(ClusterCache):
    def read(self, cr: dict) -> tuple:
        return self.children(cr), self.resource("ns", cr["metadata"]["name"])


def ready_resource() -> tuple[dict, list[dict]]:
    w = World()
    w.step()
    for s in ALL_STEPS:
        w.run_through(s)
    served = served_children(w.observed())
    children = [*served["jobs"], *served["pods"],
                *(v for k, v in served.items() if k not in ("jobs", "pods") and v)]
    cr = copy.deepcopy(w.cr)
    cr["metadata"].update(namespace="ns", resourceVersion="9", managedFields=[{"manager": "kopf"}])
    assert cr["status"]["phase"] == "Ready", cr["status"]["phase"]
    return cr, children


def named(body: dict, name: str, i: int) -> dict:
    out = copy.deepcopy(body)
    if out.get("kind") in KINDS:
        out["metadata"]["name"] = f"{name}-{out['metadata']['name']}"
        out["metadata"].setdefault("labels", {})[LABEL_INSTANCE] = instance_label(name)
    else:
        out["metadata"].update(name=name, uid=f"uid-{i}")
    return out


def measure(store_type, cr: dict, children: list[dict], n: int) -> tuple[float, float]:
    tracemalloc.start()
    store = store_type()
    for i in range(n):
        name = f"scale-{i:04d}"
        store.put_resource(named(cr, name, i))
        for child in children:
            store.put(named(child, name, i))
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    probe = named(cr, "scale-0000", 0)
    reads = 200
    read = timeit.timeit(lambda: store.read(probe), number=reads) / reads
    return held, read


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md")
    a = p.parse_args()
    cr, children = ready_resource()
    rows = {label: measure(t, cr, children, a.n)
            for label, t in (("parsed dicts (before)", ParsedDicts), ("compact JSON (ClusterCache)", Compact))}
    (old_mem, old_read), (new_mem, new_read) = rows.values()
    table = ["| kept as | memory at N | per resource | one pass's read |", "|---|---|---|---|"]
    table += [f"| {label} | {mem / 2**20:.1f} MiB | {mem / a.n / 1024:.1f} KiB | {read * 1e3:.2f} ms |"
              for label, (mem, read) in rows.items()]
    table.append(f"| compact / parsed | {new_mem / old_mem:.2f} | | {new_read / old_read:.2f} |")
    kinds = ", ".join(f"{sum(c['kind'] == k for c in children)} {k}" for k in KINDS)
    body = "\n".join([
        HEADING, "",
        f"`.venv/bin/python benchmarks/cache.py --n {a.n}` ({platform.node()}, Python "
        f"{platform.python_version()}): {a.n} Ready resources, each with its children ({kinds}) "
        "from the pure core's walk through the whole pipeline; tracemalloc's count of Python "
        "objects, not RSS.", "", *table, ""])
    print(body)
    if not a.no_write:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", body, HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
