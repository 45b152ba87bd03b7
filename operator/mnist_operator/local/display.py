"""What the local runner shows: one line per step while it runs, and the
summary and tables of the status at the end. Pure text rendering (besides
writing to the stream it is given); the runner decides, this module draws."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import TextIO

from mnist_operator.api.vocabulary import ACCURACY
from mnist_operator.core import pipeline
from mnist_operator.core.status import get_condition
from mnist_operator.core.summary import limit_words, scaling_line


def _tuned(result: dict) -> str:
    tuned = "; ".join(f"{m} {o}" for m, o in result.get("overrides", {}).items())
    return f" (tuned: {tuned})" if tuned else ""


#: The few words worth showing when a step of a stage succeeds (a stage without
#: a line here shows none).
_HEADLINES = {
    "train": lambda r: (f"held-out accuracy {r.get('accuracy')} on {r.get('testSamples')} "
                        f"digits ({r.get('device')})"),
    "export": lambda r: f"ONNX opset {r.get('opset')}, ORT vs torch max |diff| {r.get('maxAbsDiff')}",
    "engine": lambda r: f"{r.get('builder')} plan {r.get('planBytes')} bytes ({r.get('gpu', '')})",
    "repo": lambda r: "models " + ", ".join(r.get("models", [])) + _tuned(r),
    "serve": lambda r: ", ".join(f"{m} {s}" for m, s in r.get("models", {}).items()),
    "client": lambda r: "; ".join(f"{m} " + " ".join(f"{p} {a}" for p, a in per.items())
                                  for m, per in r.get("accuracy", {}).items())
    + f" (agree: {r.get('agree')})",
    "bench": lambda r: "; ".join(f"{m} best {e['best']['inferPerSec']} infer/s at {_load(e['best'])}"
                                 + _telemetry(e["best"]) + _clients(r, e)
                                 for m, e in r.get("models", {}).items()),
    "analyze": lambda r: "; ".join(f"{m} best {e['bestConfig']} {e.get('throughput')} infer/s"
                                   if e.get("bestConfig") else f"{m}: {e.get('note')}"
                                   for m, e in r.get("models", {}).items()),
    "confirm": lambda r: "; ".join(f"{m} {e.get('verdict')} {r.get('slo')} at c={e.get('c')}"
                                   for m, e in r.get("models", {}).items()),
}


def _load(best: dict) -> str:
    """Where a bench step's best point was: a concurrency, or a request rate (open loop)."""
    return f"{best['rate']}/s" if "rate" in best else f"c={best['c']}"


def _telemetry(best: dict) -> str:
    """What Triton's metrics said at a bench step's best point, in brackets."""
    if best.get("gpu") == "none":
        return " (no GPU)"
    if "telemetry" in best:
        return f" (telemetry {best['telemetry']})"
    said = [text.format(best[key]) for key, text in (
        ("gpuUtil", "GPU util {}"), ("powerW", "{} W"), ("inferPerJoule", "{} infer/J"))
        if key in best]
    return f" ({', '.join(said)})" if said else ""


def telemetry_note(point: dict) -> str:
    """The same for a status point (benchmark.perfAnalyzer.<model>.<protocol>)."""
    return _telemetry({"gpu": "none"} if point.get("telemetryAtBest") == "no GPU" else
                      {"telemetry": point["telemetryAtBest"]} if "telemetryAtBest" in point else
                      {k: point[f"{k}AtBest"] for k in ("gpuUtil", "powerW", "inferPerJoule")
                       if f"{k}AtBest" in point})

def _clients(result: dict, entry: dict) -> str:
    """A distributed bench's clients and which side its scaling check found the limit."""
    sc = entry.get("scaling")
    if not sc:
        return ""
    return (f" over {result.get('clients')} clients ({sc['clients'][0]} of them: x{sc['ratio']}, "
            f"{limit_words(sc['limit'])})")


def headline(stage: str, result: dict) -> str:
    """What a finished step says in the progress lines: its numbers, or why it failed."""
    if result.get("state") != "Succeeded":
        return result.get("message") or result.get("reason") or ""
    show = _HEADLINES.get(stage)
    return show(result) if show else ""


def _in_model_order(by_model: dict) -> list[tuple[str, object]]:
    """Models as the seed lists them (onnx, trt, bls), anything else after."""
    rank = {m: i for i, m in enumerate(pipeline.TRITON_MODEL.values())}
    return sorted(by_model.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def perf_table(status: dict) -> list[str]:
    perf = status.get("benchmark", {}).get("perfAnalyzer", {})
    lines = []
    if perf:
        lines.append(f"  {'model':<12} {'protocol':<8} {'best infer/s':>12} {'p99 ms':>8} "
                     f"{'at load':>16} {'c-lowest infer/s':>16} {'gain':>6} {'checks fail':>12}")
        for model, per in _in_model_order(perf):
            for protocol, p in per.items():
                if "requestRateAtBest" in p:   # open loop: achieved of requested, points behind
                    at = f"{p['requestRateAtBest']}/s {p['distribution']}"
                    lowest, gain = f"achieved {p['achievedAtBest']}", "-"
                    fails = f"{p['behind']:>5}/{p['points']:<6} behind"
                else:
                    at = f"c={p['concurrencyAtBest']}"
                    lowest, gain = str(p.get("inferPerSecAtLowest", "-")), p["batchingGain"]
                    fails = f"{p['littleFailures']:>5}/{p['points']:<6} Little"
                lines.append(
                    f"  {model:<12} {protocol:<8} {p['bestInferPerSec']:>12} "
                    f"{int(p['p99UsAtBest']) / 1000:>8.2f} {at:>16} {lowest:>16} {gain:>6} "
                    f"{fails}"
                    + (f"  95 % {p['lowAtBest']}..{p['highAtBest']} ({p['repeats']} runs)"
                       if "lowAtBest" in p else "") + telemetry_note(p))
                if "p99UsFromRequestsAtBest" in p:
                    lines.append(f"  {'':<12} {'':<8} {latency_line(p)}")
                if "slo" in p:
                    lines.append(f"  {'':<12} {'':<8} {slo_line(p)}")
                if "clients" in p:
                    lines.append(f"  {'':<12} {'':<8} {scaling_line(p)}")
    return lines


def latency_line(p: dict) -> str:
    """The best point's p99 from every request, with its interval, for humans."""
    ms = lambda us: f"{int(us) / 1000:.2f}"  # noqa: E731
    interval = (f" [{ms(p['p99UsLowAtBest'])}, {ms(p['p99UsHighAtBest'])}] (95 %)"
                if "p99UsLowAtBest" in p else " (too few requests for an interval)")
    return (f"p99 from {int(p['requestsAtBest']):,} requests: {ms(p['p99UsFromRequestsAtBest'])} "
            f"ms{interval}" + ("; unstable: measured in fixed windows" if "unstableAtBest" in p
                               else ""))


def slo_line(p: dict) -> str:
    """The SLO search of one model and protocol, for humans."""
    open_loop = "requestRateAtBest" in p
    load = (lambda v: f"{v}/s") if open_loop else (lambda v: f"c={v}")
    if p["inferPerSecAtSlo"] == "none":
        text = f"SLO {p['slo']}: {p.get('sloNote', 'no point meets it')}"
    else:
        at = p["requestRateAtSlo" if open_loop else "concurrencyAtSlo"]
        held = (f", at most {int(p['p99UsHighAtSlo']) / 1000:.2f} ms with 95 % confidence over "
                f"{int(p['requestsAtSlo']):,} requests" if "p99UsHighAtSlo" in p else "")
        text = (f"SLO {p['slo']}: {p['inferPerSecAtSlo']} infer/s at {load(at)} "
                f"(p99 {int(p['p99UsAtSlo']) / 1000:.2f} ms{held})")
    if "firstFailingAt" in p and p["inferPerSecAtSlo"] != "none":   # the note names it
        why = f": {p['firstFailingReason']}" if p.get("firstFailingReason") else ""
        text += (f"; {load(p['firstFailingAt'])} fails "
                 f"(p99 {int(p['p99UsFirstFailing']) / 1000:.2f} ms{why})")
    if p.get("refinedPoints"):
        text += f"; {p['refinedPoints']} points added by bisection"
    return text


def analyzer_table(status: dict) -> list[str]:
    ma = status.get("benchmark", {}).get("modelAnalyzer", {})
    if not ma:
        return []
    if "state" in ma:
        return [f"  {ma['state']}"]
    lines = [f"  {'model':<12} {'best config':<28} {'infer/s':>9} {'p99 ms':>7} {'conc':>5} "
             f"{'inst':>4} {'default infer/s':>15} {'best/default':>12}"]
    for model, m in ma.items():
        if not isinstance(m, dict):
            continue
        if not m.get("bestConfig"):   # none of its configs met the SLO
            lines.append(f"  {model:<12} {m.get('note', 'no best config')}")
            continue
        lines.append(f"  {model:<12} {m.get('bestConfig', '-'):<28} {m.get('throughput', '-'):>9} "
                     f"{m.get('p99Ms', '-'):>7} {m.get('concurrency', '-'):>5} "
                     f"{m.get('instances', '-'):>4} {m.get('defaultThroughput', '-'):>15} "
                     f"{m.get('bestOverDefault', '-'):>12}")
        if m.get("defaultNote"):
            lines.append(f"  {'':<12} {m['defaultNote']}")
        per = m.get("perJoule")
        if per:
            lines.append(f"  {'':<12} most inferences per joule: {per.get('bestConfig')} "
                         f"{per.get('inferPerJoule')} infer/J ({per.get('throughput')} infer/s at "
                         f"{per.get('powerW')} W, concurrency {per.get('concurrency')})")
    return lines


def closed_loop_table(status: dict) -> list[str]:
    loop = status.get("benchmark", {}).get("closedLoop", {})
    if not loop:
        return []
    confirmed = [f"  confirmed {model:<12} {line}"
                 for model, line in loop.get("confirmation", {}).items()]
    if "applied" not in loop:
        return confirmed + [f"  {loop.get('state')}: {loop.get('message', '')}"]
    lines = confirmed + [f"  {model:<12} {', '.join(f'{k} {v}' for k, v in cfg.items())}"
                         for model, cfg in loop.get("applied", {}).items()]
    if loop.get("before"):
        unit = loop.get("unit", "infer/s")
        lines.append(f"  compared ({loop.get('objective', 'throughput')}): "
                     f"{loop.get('basis', 'best throughput')}")
        lines.append(f"  {'model/protocol':<20} {'before ' + unit:>14} {'after ' + unit:>13} "
                     f"{'gain':>6}")
        lines += [f"  {key:<20} {loop['before'][key]:>14} {loop['after'][key]:>13} "
                  f"{loop['gains'][key]:>6}  {loop.get('verdicts', {}).get(key, '')}"
                  + (f" (95 % {loop['intervals'][key]})" if key in loop.get("intervals", {})
                     else "") for key in loop["before"]]
        lines.append(f"  overall gain {loop['gain']} ({loop.get('state')})"
                     + (f"; verdict {loop['verdict']}" if "verdict" in loop else ""))
    else:
        lines.append(f"  {loop.get('state')}")
    return lines


def environment_lines(status: dict) -> list[str]:
    """Where each sweep was measured (the environment compare groups by). The node
    comes from the step's record of the run that measured it; a step this run
    reused has none (its result file does not keep it), so its line names no node
    and says it was measured in an earlier run rather than guessing."""
    out = []
    for name, st in status["stages"].items():
        env = (st.get("result") or {}).get("environment")
        if name.startswith("bench") and env:
            configs = ", ".join(f"{m} {h}" for m, h in sorted((env.get("configs") or {}).items()))
            node = (st.get("environment") or {}).get("node")
            where = f", on {node}" if node else \
                " (reused: measured in an earlier run)" if st.get("run") == "reused" else ""
            out.append(f"  {name}: Triton {env.get('triton')}, perf_analyzer "
                       f"{env.get('perfAnalyzer')}{where}; served configs {configs}")
    return ["", "measured in (environment)"] + out if out else []


def summary_lines(status: dict, status_path: Path) -> list[str]:
    out = [f"{status['name']}: {status['phase']}  (work dir {status['workdir']})", "", "stages"]
    width = max([11, *map(len, status["stages"])])   # the closed loop's names are longer
    for name, st in status["stages"].items():
        extra = st.get("message", "") if st["state"] != "Succeeded" else ""
        out.append(f"  {name:<{width}} {st['state']:<10} {st.get('durationSeconds', 0):>5} s  "
                   f"{st.get('run', ''):<9} {st['fingerprint']}  {extra}".rstrip())
    model = status.get("model", {})
    if model:
        out += ["", "model"]
        out += [f"  {k:<16} {v}" for k, v in model.items()]
    client = status.get("clientAccuracy", {})
    if client:
        out += ["", f"client accuracy (real held-out digits through Triton, "
                    f"{client.get('samples')} each; disagreements {client.get('disagreements')})"]
        out += [f"  {m:<12} " + "  ".join(f"{p} {a}" for p, a in per.items())
                for m, per in _in_model_order(client) if isinstance(per, dict)]
        guard = get_condition(status.get("conditions"), ACCURACY)
        if guard:
            out.append(f"  accuracy guard: {guard['status']} ({guard['reason']}): {guard['message']}")
    table = perf_table(status)
    if table:
        out += ["", "perf_analyzer (best point per model and protocol; gain = best / "
                    "lowest-concurrency throughput)"] + table + environment_lines(status)
    ma = analyzer_table(status)
    if ma:
        out += ["", "model-analyzer (best config per model)"] + ma
    loop = closed_loop_table(status)
    if loop:
        out += ["", "closed loop (applyBest: the best config served and the sweep run again)"] + loop
    out += ["", f"status: {status_path}"]
    return out


# --------------------------------------------------------------------------- progress
class Progress:
    """One live line per step on a terminal (elapsed time + the stage's latest
    stderr line); plain prefixed lines otherwise (CI logs, pipes)."""

    def __init__(self, stream: TextIO, live: bool):
        self.stream, self.live = stream, live
        self._lock = threading.Lock()
        self._step: str | None = None
        self._started = 0.0
        self._last = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if live:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 20)).columns

    def _draw(self) -> None:
        if self._step is None:
            return
        line = f"  .. {self._step:<11} {time.time() - self._started:5.0f} s  {self._last}"
        self.stream.write("\r\033[K" + line[: self._width() - 1])
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()

    def start(self, step: str) -> None:
        with self._lock:
            self._step, self._started, self._last = step, time.time(), "starting"
            if self.live:
                self._draw()
            else:
                self.stream.write(f"  -> {step}\n")
                self.stream.flush()

    def line(self, step: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        with self._lock:
            if step != self._step:
                return   # Triton's late lines after its step finished: the log has them
            self._last = text
            if self.live:
                self._draw()
            else:
                self.stream.write(f"     [{step}] {text}\n")
                self.stream.flush()

    def done(self, step: str, mark: str, text: str) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(f"  {mark} {step:<11} {text}\n")
            self.stream.flush()
            if step == self._step:
                self._step = None

    def note(self, text: str) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()
            if self.live:
                self._draw()

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- I/O shell
