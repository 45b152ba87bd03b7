"""`mnist-serving report` opened in a real headless browser (Debian's
chromium-headless-shell, `make browser`).

The fixture is a local sweep of two points (each a real run directory: the stage
results of tests/unit/data/results-demo, the second point's throughputs scaled,
with three-repeat intervals) whose status the sweep's own core writes, plus two
plain runs. The installed command writes the page; the browser then

* loads it with no console message and no request of any kind: the page's own
  Content-Security-Policy turns any request into a console violation, and,
  with that policy removed from a copy, the browser runs through a recording
  proxy that sees every request it would make (both checks are proved able to
  fail on a copy with an external image and one with a script);
* renders the tables with the statuses' figures (the DOM after rendering,
  parsed with html.parser);
* writes a 1280x2000 screenshot, kept as tests/artifacts/report.png.

A missing browser fails the test, naming `make browser`: never a skip.
"""
from __future__ import annotations

import copy
import json
import socket
import struct
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from mnist_operator.core.summary import summarize
from mnist_operator.core.sweep import reconcile_sweep
from tests.harness.html_tables import Tables, as_dicts

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "unit" / "data" / "results-demo"
COMMAND = Path(sys.executable).with_name("mnist-serving")
ARTIFACTS = ROOT / "tests" / "artifacts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CSP_META = '<meta http-equiv="Content-Security-Policy"'
EXTERNAL_IMG = '<img src="http://example.invalid/x.png" alt="">'


# --------------------------------------------------------------------------- the browser
def browser() -> str:
    """The chromium-headless-shell binary; a loud failure naming `make browser` if missing."""
    got = subprocess.run([str(ROOT / "scripts" / "browser.sh"), "--print-bin"],
                         capture_output=True, text=True)
    path = got.stdout.strip()
    if got.returncode != 0 or not path or not Path(path).is_file():
        pytest.fail("the headless browser is missing (Debian chromium-headless-shell): "
                    f"run `make browser` ({got.stderr.strip()})", pytrace=False)
    return path


class RecordingProxy:
    """An HTTP proxy that answers 502 to everything and records each request line
    (a CONNECT for https): with every host going through it, it sees every request
    the browser makes."""

    def __init__(self):
        self.seen: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.seen.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self.server.close()


def open_page(page: Path, profile: Path, *flags: str) -> tuple[str, list[str], list[str]]:
    """(stdout, console lines, requests the proxy saw) of one headless run on ``page``."""
    proxy = RecordingProxy()
    try:
        run = subprocess.run(
            [browser(), "--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", f"--proxy-server=http://127.0.0.1:{proxy.port}",
             "--proxy-bypass-list=<-loopback>", "--enable-logging=stderr", "--v=0",
             *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        proxy.close()
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return run.stdout, console, proxy.seen


# --------------------------------------------------------------------------- fixture
def demo_results() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}


def scaled(results: dict[str, dict], factor: float) -> dict[str, dict]:
    """Every throughput times ``factor``, each best point with a 3-repeat ±2 % interval
    and its p99 from 40,000 requests (as the bench stage now writes it)."""
    out = copy.deepcopy(results)
    for step in ("bench-grpc", "bench-http"):
        for entry in out[step]["models"].values():
            for r in entry["rows"] + [entry["best"]]:
                r["inferPerSec"] = f"{float(r['inferPerSec']) * factor:.1f}"
            b = float(entry["best"]["inferPerSec"])
            p99 = entry["best"]["p99Us"]
            entry["best"].update(repeats=3, low=f"{b * 0.98:.1f}", high=f"{b * 1.02:.1f}",
                                 latency={"requests": 40000, "p99": [p99, p99 - 40, p99 + 60]})
    return out


def write_run(root: Path, name: str, results: dict[str, dict]) -> dict:
    """A run directory as the local runner leaves it."""
    (root / "results").mkdir(parents=True)
    for step, result in results.items():
        (root / "results" / f"{step}.json").write_text(json.dumps(result))
    stages = {s: {"state": r["state"], "fingerprint": r["fingerprint"],
                  "completionTime": r.get("completionTime", "")} for s, r in results.items()}
    status = {"name": name, "phase": "Ready", "stages": stages, **summarize(results)}
    (root / "status.json").write_text(json.dumps(status))
    return status


def write_sweep(root: Path) -> dict:
    """Two points (serving.instances 1 and 2), each run, ranked by the sweep's core."""
    spec = yaml.safe_load((ROOT / "examples" / "local.yaml").read_text())["spec"]
    sweep = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServingSweep",
             "metadata": {"name": "inst", "namespace": "local", "uid": "local-inst",
                          "generation": 1},
             "spec": {"template": spec, "objective": "throughput", "maxParallel": 2,
                      "axes": [{"field": "serving.instances", "values": [1, 2]}]}, "status": {}}
    now = datetime.now(timezone.utc)
    children = []
    for child, factor in zip(reconcile_sweep(sweep, [], now).create, (1.0, 1.3)):
        name = child["metadata"]["name"]
        children.append({**child, "status": write_run(root / name, name,
                                                      scaled(demo_results(), factor))})
    status = {"name": "inst", **reconcile_sweep(sweep, children, now).status,
              "workdir": str(root)}
    (root / "status.json").write_text(json.dumps(status, indent=2))
    return status


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The sweep, two plain runs, and the page the installed command wrote of them."""
    root = tmp_path_factory.mktemp("report")
    sweep = write_sweep(root / "runs" / "inst")
    runs = {name: write_run(root / "runs" / name, name, scaled(demo_results(), factor))
            for name, factor in (("a", 1.0), ("b", 1.1))}
    out = root / "report.html"
    made = subprocess.run([str(COMMAND), "report", "runs/inst", "runs/a", "runs/b",
                           "--out", str(out)], capture_output=True, text=True, timeout=120,
                          cwd=root)
    assert made.returncode == 0, made.stderr
    return {"root": root, "page": out, "sweep": sweep, "runs": runs, "stdout": made.stdout}




# --------------------------------------------------------------------------- tests
def test_the_page_loads_offline_with_no_console_message_and_no_request(built, tmp_path):
    dom, console, seen = open_page(built["page"], tmp_path / "p1", "--dump-dom")
    assert console == [] and seen == []
    assert "mnist-serving report" in dom and "<svg" in dom
    # the same page without its policy: the proxy alone stands between it and the network
    bare = tmp_path / "bare.html"
    text = built["page"].read_text()
    assert text.count(CSP_META) == 1
    bare.write_text(text.replace(CSP_META, "<meta"))
    _, console, seen = open_page(bare, tmp_path / "p2", "--dump-dom")
    assert console == [] and seen == []


def test_both_checks_catch_an_external_request_and_a_script(built, tmp_path):
    """The checks above can fail: an external image is a CSP violation in the console
    with the policy, a request the proxy sees without it; a script is refused."""
    text = built["page"].read_text()
    with_img = tmp_path / "img.html"
    with_img.write_text(text.replace("</main>", EXTERNAL_IMG + "</main>"))
    _, console, seen = open_page(with_img, tmp_path / "p1", "--dump-dom")
    assert seen == [] and len(console) == 1
    assert "http://example.invalid/x.png" in console[0] and "Content Security Policy" in console[0]

    without_csp = tmp_path / "img-bare.html"
    without_csp.write_text(with_img.read_text().replace(CSP_META, "<meta"))
    _, console, seen = open_page(without_csp, tmp_path / "p2", "--dump-dom")
    assert seen == ["GET http://example.invalid/x.png HTTP/1.1"]

    with_script = tmp_path / "script.html"
    with_script.write_text(text.replace("</main>", "<script>document.title='x'</script></main>"))
    dom, console, _ = open_page(with_script, tmp_path / "p3", "--dump-dom")
    assert len(console) == 1 and "Content Security Policy" in console[0]
    assert "<title>mnist-serving report</title>" in dom      # the script did not run


def test_the_rendered_tables_hold_the_figures_of_the_statuses(built, tmp_path):
    dom, _, _ = open_page(built["page"], tmp_path / "p", "--dump-dom")
    ranking, runs, environments = Tables(dom).tables
    sweep = built["sweep"]
    rows = as_dicts(ranking)
    best = sweep["best"]["point"]
    assert [r["point"] for r in rows][0] == best
    by_name = {r["point"]: r for r in rows}
    verdicts = {v["point"]: v for v in sweep["verdicts"]}
    assert set(by_name) == {p["name"] for p in sweep["points"]} and len(by_name) == 2
    for point in sweep["points"]:
        cells = by_name[point["name"]]
        assert cells["infer/s"] == point["inferPerSec"]
        assert cells["p99 ms"] == f"{point['p99Us'] / 1000:.2f}"
        assert cells["95 % interval"] == f"[{point['low']}, {point['high']}]"
        assert cells["serving.instances"] == str(point["values"]["serving.instances"])
        assert cells["environment"] == point["environment"]
        assert ("◆ Pareto" in cells["marks"]) == (point["name"] in sweep["pareto"])
        if point["name"] in verdicts:
            v = verdicts[point["name"]]
            assert cells["best / this"] == f"{v['ratio']}× [{v['low']}, {v['high']}]"
            assert cells["verdict"] == v["verdict"]
    answer = f"Best: {best} (serving.instances=2): {sweep['best']['value']} infer/s, "
    assert answer in dom and built["stdout"].startswith(answer)

    shown = {(r["source"], r["model"], r["protocol"]): r for r in as_dicts(runs)}
    assert len(shown) == 8
    for name, status in built["runs"].items():
        for model, per in status["benchmark"]["perfAnalyzer"].items():
            for protocol, point in per.items():
                cells = shown[(f"runs/{name}", model, protocol)]
                assert cells["best infer/s"] == str(point["bestInferPerSec"])
                assert cells["p99 ms at best"] == f"{point['p99UsAtBest'] / 1000:.2f}"
                assert cells["95 % interval"] == f"[{point['lowAtBest']}, {point['highAtBest']}]"
                assert cells["load at best"] == f"c={point['concurrencyAtBest']}"
                # the p99 from every request with its 95 % interval and request count
                assert cells["p99 ms, every request [95 % interval] (requests)"] == (
                    f"{int(point['p99UsFromRequestsAtBest']) / 1000:.2f} "
                    f"[{int(point['p99UsLowAtBest']) / 1000:.2f}, "
                    f"{int(point['p99UsHighAtBest']) / 1000:.2f}] "
                    f"({int(point['requestsAtBest']):,})")
    assert as_dicts(runs)[0]["source"] == "runs/b"          # the fastest first
    assert {r["environment"] for r in as_dicts(environments)} >= {
        p["environment"] for p in sweep["points"]}


def test_a_screenshot_is_written_as_an_artifact(built, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _, console, seen = open_page(built["page"], tmp_path / "p", f"--screenshot={shot}",
                                 "--window-size=1280,2000", "--hide-scrollbars")
    assert console == [] and seen == []
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    assert struct.unpack(">II", data[16:24]) == (1280, 2000)   # IHDR: width, height
    print(f"\nscreenshot: {shot}")
