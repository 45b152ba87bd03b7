"""Triton's metrics endpoint sampled during a bench point (mnist_jobs.lib.telemetry).

Two kinds of metrics text: one captured from the real tritonserver here (CPU
only, so no GPU families), and a hand-written pair with two GPUs in Triton's
documented format, with round numbers so the summary can be checked by hand.
"""
from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from mnist_jobs import bench
from mnist_jobs.lib import perf, telemetry
from mnist_jobs.lib.stage_cli import fmt

DATA = Path(__file__).parent / "data"
CPU_START, CPU_END = ((DATA / f"triton-metrics-cpu-{w}.txt").read_text() for w in ("start", "end"))
GPU_START, GPU_END = ((DATA / f"triton-metrics-gpu-handwritten-{w}.txt").read_text()
                      for w in ("start", "end"))
GPU_A = "GPU-1a2b3c4d-0000-1111-2222-333344445555"
GPU_B = "GPU-9f8e7d6c-6666-7777-8888-999900001111"


def scrapes(*texts: str, step_s: float = 2.0) -> list[telemetry.Scrape]:
    return [telemetry.Scrape(i * step_s, telemetry.parse(t)) for i, t in enumerate(texts)]


# --------------------------------------------------------------------------- the parser
def test_real_cpu_metrics_parse_into_per_model_families_and_no_gpu_ones():
    m = telemetry.parse(CPU_END)
    assert telemetry.model_total(m, "nv_inference_count", "mnist_onnx") == 2554
    assert telemetry.model_total(m, "nv_inference_count", "mnist_bls") == 1080
    assert telemetry.model_total(m, "nv_inference_request_success", "mnist_onnx") == 2527
    assert telemetry.model_total(m, "nv_inference_queue_duration_us", "mnist_bls") == 1622856
    assert m["nv_inference_count"][0][0] == {"model": "mnist_bls", "version": "1"}
    assert m["nv_cpu_utilization"] == [({}, 1.0)]     # a sample without labels
    assert not any(f.startswith(("nv_gpu_", "nv_energy_")) for f in m)
    assert telemetry.model_total(m, "nv_inference_count", "mnist_trt") is None


def test_parser_reads_escaped_labels_and_timestamps_and_refuses_garbage():
    m = telemetry.parse('x{a="say \\"hi\\"",b="back\\\\slash"} 1.5 1712345678000\n'
                        'y{gpu_uuid="GPU-1"} NaN\n')
    assert m["x"] == [({"a": 'say "hi"', "b": "back\\slash"}, 1.5)]
    assert telemetry.per_gpu(m, "y")["GPU-1"] != telemetry.per_gpu(m, "y")["GPU-1"]   # NaN
    with pytest.raises(telemetry.MetricsFormatError, match="line 2"):
        telemetry.parse("ok 1\n<html>not metrics</html>\n")
    with pytest.raises(telemetry.MetricsFormatError, match="bad value"):
        telemetry.parse("x{a=\"1\"} twelve\n")


# --------------------------------------------------------------------------- the summary
def test_without_gpu_metrics_the_summary_says_none_and_keeps_the_models_figures():
    s = telemetry.summarize(scrapes(CPU_START, CPU_END), "mnist_onnx")
    assert s["gpu"] == "none"
    assert not {"gpuUtil", "powerW", "energyJ", "inferPerJoule"} & set(s)   # never zeros
    assert (s["inferences"], s["requests"]) == (2554, 2527)        # from 0 at start
    assert s["queueUsPerRequest"] == pytest.approx(915368 / 2527, abs=0.1)
    assert s["computeInferUsPerRequest"] == pytest.approx(2422216 / 2527, abs=0.1)
    assert telemetry.row_fields(s, fmt) == {"gpu": "none"}
    assert "no GPU metrics" in telemetry.line(s)


def test_gpu_summary_arithmetic_on_two_gpus():
    s = telemetry.summarize(scrapes(GPU_START, GPU_END), "mnist_onnx")
    # the model over both its versions; mnist_bls's counts stay out
    assert (s["inferences"], s["requests"]) == (3700, 1850)
    assert s["queueUsPerRequest"] == 200.0 and s["computeInferUsPerRequest"] == 500.0
    assert s["gpus"][GPU_A] == {"utilMean": 0.6, "utilMax": 0.8, "powerW": 120.0,
                                "memoryUsedMaxBytes": 1_500_000_000, "energyJ": 250.0}
    assert s["gpus"][GPU_B]["utilMean"] == 0.1 and s["gpus"][GPU_B]["energyJ"] == 120.0
    assert s["gpuUtil"] == 0.35 and s["gpuUtilMax"] == 0.8    # mean over GPUs, max of any
    assert s["powerW"] == 180.0                               # what the server drew: the sum
    assert (s["energyJ"], s["energySource"]) == (370.0, "counter")
    assert s["inferPerJoule"] == 10.0                         # 3700 inferences / 370 J
    assert s["seconds"] == 2.0 and s["scrapes"] == 2
    assert telemetry.row_fields(s, fmt) == {"gpuUtil": "0.35", "powerW": "180.0",
                                            "inferPerJoule": "10.0"}


def test_gauges_are_averaged_over_every_scrape_counters_taken_first_to_last():
    s = telemetry.summarize(scrapes(GPU_START, GPU_END, GPU_END), "mnist_onnx")
    assert s["gpus"][GPU_A]["utilMean"] == pytest.approx((0.4 + 0.8 + 0.8) / 3, abs=1e-4)
    assert s["energyJ"] == 370.0 and s["seconds"] == 4.0


def test_energy_falls_back_to_mean_power_times_time_and_says_why():
    no_counter = "\n".join(l for l in GPU_END.splitlines() if "nv_energy_consumption" not in l)
    s = telemetry.summarize(scrapes(GPU_START, no_counter), "mnist_onnx")
    assert s["energyJ"] == 360.0                              # 180 W x 2 s
    assert s["energySource"] == "power x time (nv_energy_consumption is missing)"
    assert s["inferPerJoule"] == round(3700 / 360, 2)
    # Triton refreshes the counter every 2 s: over a shorter point it may not move
    frozen = GPU_END.replace("1250.000000", "1000.000000").replace("620.000000", "500.000000")
    s = telemetry.summarize(scrapes(GPU_START, frozen), "mnist_onnx")
    assert s["energySource"] == "power x time (nv_energy_consumption did not increase)"


def test_one_scrape_or_none_is_unreachable_never_a_number():
    assert telemetry.summarize([], "m", ["http://x/metrics: refused"]) == \
        {"telemetry": "unreachable: http://x/metrics: refused"}
    assert telemetry.summarize(scrapes(GPU_END), "m")["telemetry"].startswith("unreachable: 1 ")
    s = telemetry.summarize(scrapes(GPU_START, GPU_END), "mnist_trt")
    assert "inferences" not in s and "inferPerJoule" not in s and "no nv_inference_count" in s["missing"]


# --------------------------------------------------------------------------- the sampler
class MetricsServer:
    """A real HTTP endpoint that serves ``texts`` one per GET, the last one again after."""

    def __init__(self, *texts: str, status: int = 200):
        served = list(texts)
        self.gets = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = served[min(outer.gets, len(served) - 1)].encode()
                outer.gets += 1
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metrics_server():
    made = []

    def start(*texts, **kw):
        made.append(MetricsServer(*texts, **kw))
        return made[-1]
    yield start
    for s in made:
        s.close()


def test_sampler_scrapes_at_start_during_and_at_end_over_http(metrics_server):
    server = metrics_server(GPU_START, GPU_END)
    stop = threading.Event()
    with telemetry.Sampler(server.url, "mnist_onnx", interval_ms=50) as sampled:
        stop.wait(0.3)                                    # the measurement
    s = sampled.summary()
    assert server.gets == s["scrapes"] >= 4               # start + background + end
    assert s["inferences"] == 3700 and s["energySource"] == "counter"
    assert 0.25 <= s["seconds"] < 2.0                     # the span it sampled


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_that_cannot_be_read_is_a_warning(metrics_server):
    url = f"http://127.0.0.1:{_closed_port()}/metrics"
    with telemetry.Sampler(url, "mnist_onnx", interval_ms=50) as sampled:
        pass
    s = sampled.summary()
    assert s["telemetry"].startswith(f"unreachable: {url}: ") and "refused" in s["telemetry"]
    assert telemetry.row_fields(s, fmt) == {"telemetry": s["telemetry"]}
    with telemetry.Sampler(metrics_server("<html>hi</html>").url, "m", interval_ms=50) as sampled:
        pass
    assert "is not Prometheus text: line 1" in sampled.summary()["telemetry"]
    with telemetry.Sampler(metrics_server("gone", status=404).url, "m", 50) as sampled:
        pass
    assert "HTTP Error 404" in sampled.summary()["telemetry"]


def test_no_url_means_no_telemetry():
    with telemetry.sampler("", "mnist_onnx") as sampled:
        pass
    assert sampled.summary() == {} and telemetry.row_fields({}, fmt) == {}


# --------------------------------------------------------------------------- in the bench stage
CSV = (DATA / "perf-mnist_onnx-grpc.csv").read_text()


@pytest.fixture
def fake_perf_analyzer(monkeypatch, bench_surroundings):
    """perf_analyzer replaced by its real CSV (the bench's own logic is what is tested)."""
    def run(cmd, capture_output, text, timeout):
        if cmd[1:] == ["--version"]:
            return subprocess.CompletedProcess(cmd, 0, "Perf Analyzer Version 2.45.0\n", "")
        Path(cmd[cmd.index("-f") + 1]).write_text(CSV)
        return subprocess.CompletedProcess(cmd, 0, "ok\n", "")
    monkeypatch.setattr(bench.subprocess, "run", run)


def _bench(tmp_path, metrics_url, concurrency="4:4:1"):
    return bench.run_bench(bench.BenchConfig("127.0.0.1:8001", "grpc", ["mnist_onnx"], 1, concurrency,
                           "time_windows", 500, 50, 10, tmp_path / "bench",
                           metrics_url=metrics_url, telemetry_interval_ms=50))


def test_bench_rows_and_best_carry_the_points_telemetry(tmp_path, metrics_server, fake_perf_analyzer):
    result = _bench(tmp_path, metrics_server(GPU_START, GPU_END).url)
    entry = result["models"]["mnist_onnx"]
    assert entry["rows"][0]["inferPerJoule"] == "10.0" and entry["rows"][0]["gpuUtil"]
    assert entry["best"]["inferPerJoule"] == "10.0" and "powerW" in entry["best"]
    assert "telemetry" not in result
    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert saved["telemetry"]["mnist_onnx"]["4"]["inferences"] == 3700
    assert saved["metricsUrl"].endswith("/metrics")


def test_bench_without_a_reachable_endpoint_still_succeeds_and_warns(tmp_path, fake_perf_analyzer):
    result = _bench(tmp_path, f"http://127.0.0.1:{_closed_port()}/metrics")
    row = result["models"]["mnist_onnx"]["rows"][0]
    assert row["telemetry"].startswith("unreachable: ") and row["inferPerSec"]
    assert result["telemetry"].startswith("1 point(s) without telemetry; first: mnist_onnx 4: ")


def test_bench_refuses_a_metrics_url_that_is_not_http(tmp_path):
    with pytest.raises(bench.InputError, match="--metrics-url"):
        _bench(tmp_path, "127.0.0.1:8002")


def test_a_long_sweep_with_telemetry_fits_the_termination_message_and_keeps_best():
    rows = perf.parse_csv((DATA / "perf-range-mnist_bls-grpc.csv").read_text())
    gpu = telemetry.row_fields(telemetry.summarize(scrapes(GPU_START, GPU_END), "mnist_onnx"), fmt)
    many = [{**bench.compact_row([r]), **gpu} for r in rows] * 20
    best = {"c": 1, "inferPerSec": "1.0", "p99Us": 1, **gpu}
    result = {"models": {m: {"rows": list(many), "best": dict(best)} for m in ("a", "b", "c")},
              "out": "/x", "telemetry": "1 point(s) without telemetry; first: a 4: unreachable: x"}
    small = bench.shrink(result)
    assert len(json.dumps(small).encode()) < 3300
    for entry in small["models"].values():
        assert entry["best"]["inferPerJoule"] == "10.0"      # detail goes, the best point stays
    assert small["telemetry"].startswith("1 point(s)")      # and so does the warning


def test_a_real_h200_capture_gives_gpu_utilization_power_and_inferences_per_joule():
    """Two scrapes 4 s apart of the pytriton tritonserver on the lent H200 while
    perf_analyzer drove mnist_pt (torch on CUDA, 4 instances) at c=257."""
    start, end = ((DATA / f"triton-metrics-h200-{w}.txt").read_text() for w in ("start", "end"))
    s = telemetry.summarize(scrapes(start, end, step_s=4.0), "mnist_pt")
    assert s["inferences"] == 836803 - 696468
    assert (s["energyJ"], s["energySource"]) == (pytest.approx(10586.702 - 10026.098), "counter")
    assert s["gpuUtil"] == pytest.approx((0.26 + 0.27) / 2)
    assert s["powerW"] == pytest.approx((140.61 + 140.368) / 2, abs=0.01)   # kept to 0.01 W
    assert s["inferPerJoule"] == pytest.approx(140335 / 560.604, abs=0.01)   # about 250
    assert telemetry.row_fields(s, fmt) == {"gpuUtil": "0.27", "powerW": "140.5",
                                            "inferPerJoule": "250.3"}
