"""The figures tests/node/test_node_admin.py measures, for the "Real node" section of
docs/BENCHMARKS.md that test_node_e2e.py writes (`make bench-node`).

They live here, not in a test module: pytest imports tests/node/test_node_e2e.py as
``node.test_node_e2e`` (tests/ has no __init__.py), so a test file that imports
``tests.node.test_node_e2e`` gets a second copy of that module and of its FIGURES. This
module has one name whichever way it is imported.
"""
from __future__ import annotations

#: what an administrator does to a running pipeline -> seconds, in the order measured
ADMIN: dict[str, float] = {}
