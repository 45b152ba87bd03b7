"""One row per pipeline stage: everything the operator, the builders and the
status know about a stage that is not its parameters (those are in
pipeline.py). Adding a stage means its CLI in mnist_jobs, its row here and
its parameters in the plan.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str                      # the mnist_jobs module
    image: str                     # which spec.images field it runs in
    condition: str                 # its condition type in status
    phase: str                     # status.phase while one of its steps is in progress
    deadline_seconds: int          # its Job's activeDeadlineSeconds (a hung stage fails)
    long_running: bool = False     # serves until stopped: the Triton Deployment, not a Job
    runs_own_triton: bool = False  # a Triton sidecar in its pod takes the GPU serving would hold
    #                                (the repository it serves is its params' model_repo)
    pins_gpu_product: bool = False  # reads or writes a TensorRT plan, which loads on one GPU model
    replans: bool = False          # its result decides which steps follow (the closed loop)
    resources: str = ""            # its container's spec.resources field, when not its name

    @property
    def resources_of(self) -> str:
        return self.resources or self.name


#: Pipeline order; the serve stage is the Deployment, so it has no deadline.
STAGES = (
    Stage("train", "pytorch", "Trained", "Training", 6 * 3600),
    Stage("export", "pytorch", "Exported", "Exporting", 3600),
    Stage("engine", "pytorch", "EngineBuilt", "BuildingEngine", 2 * 3600, pins_gpu_product=True),
    Stage("repo", "pytorch", "RepositoryReady", "Deploying", 1800),
    Stage("serve", "triton", "Serving", "Deploying", 0, long_running=True),
    Stage("client", "sdk", "Verified", "Verifying", 1800),
    # the two bench steps (one per protocol) fold into one condition
    Stage("bench", "sdk", "Benchmarked", "Benchmarking", 4 * 3600),
    Stage("analyze", "sdk", "Analyzed", "Analyzing", 4 * 3600, runs_own_triton=True,
          pins_gpu_product=True, replans=True),
    # the closed loop's candidates held to the SLO before any is served (with an SLO)
    Stage("confirm", "sdk", "CandidatesConfirmed", "Confirming", 4 * 3600,
          runs_own_triton=True, pins_gpu_product=True, replans=True, resources="bench"),
)
BY_NAME = {s.name: s for s in STAGES}


__all__ = ["Stage", "STAGES", "BY_NAME"]
