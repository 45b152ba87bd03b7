"""hack/kind/create-cluster.sh without Docker or a GPU: the script is sourced
(which defines its functions and runs nothing) with fake docker, kind, nvkind,
kubectl, helm, nvidia-smi, df and go first on PATH. Each fake records its argv
and answers from FAKE_* environment variables, so every check the script makes
(driver, disk, inotify, nvkind's GPU set-up on create and on reuse), its tag
handling and its image pattern are driven here; what the real tools then do on
a GPU host is not (see docs/install.md, "kind with a GPU")."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.harness.node import readme as pages
from .tools import CHART, ROOT, require_tool

sys.path.insert(0, str(ROOT / "operator"))
from mnist_operator.api.spec import IMAGE_PATTERN  # noqa: E402

SCRIPT = ROOT / "hack" / "kind" / "create-cluster.sh"
ID_A = "sha256:" + "a1" * 32
ID_B = "sha256:" + "b2" * 32

# Every fake logs "<tool> <argv>" to $FAKE_LOG first.
FAKES = {
    "docker": r'''
case "$1" in
  info)
    case "$*" in
      *DefaultRuntime*) echo "${FAKE_DOCKER_RUNTIME:-nvidia}" ;;
      *DockerRootDir*) echo "${FAKE_DOCKER_ROOT:-/var/lib/docker}" ;;
    esac ;;
  run) exit "${FAKE_DOCKER_RUN_RC:-0}" ;;
  build|tag) exit 0 ;;
  image)
    case "$2" in
      inspect) echo "${FAKE_IMAGE_ID:-}" ;;
      save) exit "${FAKE_SAVE_RC:-0}" ;;
    esac ;;
  exec)
    [[ " ${FAKE_NO_CTK:-} " != *" $2 "* ]] || exit 127
    echo "NVIDIA Container Toolkit CLI version 1.19.0" ;;
  version) echo linux/amd64 ;;
esac
''',
    "kind": r'''
case "$1 $2" in
  "version "*) echo "${FAKE_KIND_VERSION:-kind v0.31.0 go1.25.5 linux/amd64}" ;;
  "get clusters") [[ ! -e "$FAKE_STATE/cluster" ]] || echo mnist-serving ;;
  "get nodes") printf '%b\n' "${FAKE_NODES:-mnist-serving-control-plane\nmnist-serving-worker}" ;;
  "load docker-image") exit "${FAKE_LOAD_RC:-0}" ;;
  "load image-archive") exit "${FAKE_ARCHIVE_RC:-0}" ;;
esac
''',
    "nvkind": r'''
[[ "${FAKE_NVKIND_CREATES:-1}" == 0 ]] || touch "$FAKE_STATE/cluster"
exit "${FAKE_NVKIND_RC:-0}"
''',
    "kubectl": r'''
case "$*" in
  *"get --raw /version"*) exit "${FAKE_API_RC:-0}" ;;
  *"get runtimeclass nvidia"*) exit "${FAKE_RUNTIMECLASS_RC:-0}" ;;
  *"range"*"allocatable.nvidia"*) echo "${FAKE_GPUS:-1}" ;;
  *"status.phase"*) echo "${FAKE_PHASE:-Ready}" ;;
esac
''',
    "helm": "exit 0\n",
    "nvidia-smi": r'''
case "$*" in
  *--query-gpu=driver_version*) printf '%b\n' "${FAKE_DRIVER:-580.95.05}" ;;
  *) echo "GPU 0: NVIDIA H200 (UUID: GPU-0)" ;;
esac
''',
    "df": r'''
echo "Filesystem 1024-blocks Used Available Capacity Mounted on"
echo "/dev/fake 999999999 1 ${FAKE_DF_KB:-209715200} 1% /"
''',
    "go": r'''
echo "${FAKE_GO_NVKIND:-	mod	github.com/NVIDIA/nvkind	v0.0.0-20260609185150-24c190e165d4}"
''',
}


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    log: list[str]

    def calls(self, tool: str) -> list[str]:
        return [line for line in self.log if line.split(" ", 1)[0] == tool]


@pytest.fixture
def kind_script(tmp_path):
    """run(BODY, **FAKE_ENV): source the script, then run BODY, with the fakes first on PATH."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    log = tmp_path / "calls.log"
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "{name} $*" >>"$FAKE_LOG"\n{body}')
        path.chmod(0o755)

    def run(body: str, cluster_exists: bool = False, **env: str) -> Run:
        if cluster_exists:
            (state / "cluster").touch()
        log.write_text("")
        full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
                    "FAKE_LOG": str(log), "FAKE_STATE": str(state), "FAKE_IMAGE_ID": ID_A, **env}
        # Deterministic inotify limits unless a test asks otherwise.
        prelude = "read_sysctl() { echo 1048576; }\n" if "read_sysctl" not in body else ""
        out = subprocess.run(["bash", "-c", f'source "{SCRIPT}"\n{prelude}{body}'], cwd=ROOT, env=full_env,
                             capture_output=True, text=True, timeout=60)
        return Run(out.returncode, out.stdout, out.stderr, log.read_text().splitlines())

    return run


# ------------------------------------------------------------------ image references and tags

@pytest.mark.parametrize("ref, repo, tag", [
    ("mnist-serving-operator:dev", "mnist-serving-operator", "dev"),
    ("mnist-serving-operator", "mnist-serving-operator", "latest"),
    ("localhost:5001/mnist-serving/operator:dev", "localhost:5001/mnist-serving/operator", "dev"),
    ("localhost:5001/operator", "localhost:5001/operator", "latest"),
    ("ghcr.io/me/operator:1.2.3_rc", "ghcr.io/me/operator", "1.2.3_rc"),
])
def test_split_image_keeps_a_registry_port_in_the_repository(kind_script, ref, repo, tag):
    r = kind_script(f'split_image "{ref}"')
    assert r.rc == 0, r.stderr
    assert r.stdout == f"{repo} {tag}\n"


@pytest.mark.parametrize("ref, why", [
    ("op@sha256:" + "0" * 64, "a digest cannot be built"),
    ("Operator:dev", "is not an image reference"),
    ("op:-dev", "is not an image reference"),
    ("op:dev extra", "is not an image reference"),
    ("", "is not an image reference"),
])
def test_split_image_refuses_what_it_cannot_build(kind_script, ref, why):
    r = kind_script(f'split_image "{ref}"; echo UNREACHED')
    assert r.rc == 1 and "UNREACHED" not in r.stdout
    assert why in r.stderr, r.stderr


def test_each_build_gets_a_tag_of_its_own(kind_script):
    r = kind_script(f'build_ref localhost:5001/op:dev {ID_A}; build_ref localhost:5001/op:dev {ID_B}; '
                    f'build_ref op {ID_A}')
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines() == ["localhost:5001/op:dev-" + "a1" * 6, "localhost:5001/op:dev-" + "b2" * 6,
                                     "op:latest-" + "a1" * 6]
    r = kind_script('x=$(build_ref op:dev ""); echo "UNREACHED $x"')
    assert r.rc == 1 and "docker gave no image ID" in r.stderr and "UNREACHED" not in r.stdout
    r = kind_script(f'build_ref op:{"t" * 120} {ID_A}')
    assert r.rc == 1 and "longer than 128" in r.stderr


def _script_image_re() -> str:
    m = re.search(r"^IMAGE_RE='([^']*)'$", SCRIPT.read_text(), re.M)
    assert m, "IMAGE_RE='...' not found in the script"
    return m.group(1)


def test_one_image_pattern_for_the_crd_the_chart_and_the_script():
    assert _script_image_re() == IMAGE_PATTERN.replace(r"\s", "[:space:]")
    schema = json.loads((CHART / "values.schema.json").read_text())
    images = schema["properties"]["stageDefaults"]["properties"]["images"]["properties"]
    patterns = {name: images[name]["pattern"] for name in ("pytorch", "triton", "sdk")}
    patterns["stages"] = next(alt["pattern"] for alt in images["stages"]["anyOf"] if "pattern" in alt)
    assert patterns == dict.fromkeys(patterns, IMAGE_PATTERN)
    crd = yaml.safe_load((ROOT / "manifests" / "crd" / "mnistservings.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    crd_images = spec["properties"]["images"]["properties"]
    # the CRD checks the pattern in a CEL rule, whose message says it in words
    rules = {name: crd_images[name]["x-kubernetes-validations"][0]["rule"] for name in patterns}
    assert rules == {name: f"self == '' || self.matches(r'{IMAGE_PATTERN}')" for name in patterns}


REFS = ["nvcr.io/nvidia/tritonserver:26.04-py3", "localhost:5001/mnist-serving/operator:dev-a1a1a1a1a1a1",
        "registry.local:443/x/y@sha256:" + "f" * 64, "op", "op:1.0@sha256:" + "e" * 64,
        "Localhost:5001/op", "op:", "op:dev:extra", "op@sha256:short", "a b", "localhost:port/op", ":dev"]


def test_bash_and_json_schema_patterns_agree(kind_script):
    checks = "\n".join(f'valid_image "{ref}" && echo yes || echo no' for ref in REFS)
    r = kind_script(checks)
    assert r.rc == 0, r.stderr
    bash = r.stdout.split()
    python = ["yes" if re.search(IMAGE_PATTERN, ref) else "no" for ref in REFS]
    assert bash == python
    assert bash[:5] == ["yes"] * 5 and bash[5:] == ["no"] * (len(REFS) - 5)


def test_chart_accepts_an_image_with_a_registry_port():
    helm = require_tool("helm")
    ref = "localhost:5001/mnist-serving/operator:dev-" + "a1" * 6
    out = subprocess.run([str(helm), "template", "t", str(CHART), "--set", "image.repository=localhost:5001/mnist-serving/operator",
                          "--set", "image.tag=dev-" + "a1" * 6, "--set", f"stageDefaults.images.stages={ref}",
                          "--set", "stageDefaults.images.sdk=localhost:5001/nvidia/tritonserver:26.04-py3-sdk"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"image: {ref}" in out.stdout or f'image: "{ref}"' in out.stdout
    bad = subprocess.run([str(helm), "template", "t", str(CHART), "--set", "stageDefaults.images.stages=Op:dev"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "stages" in bad.stderr


# ------------------------------------------------------------------ preflight

@pytest.mark.parametrize("driver, ok, says", [
    ("575.51.03", True, ""),
    ("590.44.01", True, ""),
    ("580.65.06\n580.65.06", True, ""),
    ("535.104.05", True, "only on a data-center GPU"),
    ("470.57.02", True, "only on a data-center GPU"),
    ("545.23.08", True, "only on a data-center GPU"),
    ("535.54.03", False, "too old for the NGC 26.04 images (CUDA 13.2.1): they need driver 575 or later"),
    ("560.28.03", False, "need driver 575 or later"),
    ("570.86.15", False, "need driver 575 or later"),
    ("N/A", False, "cannot read the driver version"),
])
def test_driver_version_is_checked(kind_script, driver, ok, says):
    r = kind_script("check_driver; echo PASSED", FAKE_DRIVER=driver)
    assert ("PASSED" in r.stdout) == ok, r.stderr
    assert says in r.stderr
    assert r.calls("nvidia-smi") == ["nvidia-smi --query-gpu=driver_version --format=csv,noheader"]


def test_an_old_driver_stops_before_any_pull_or_build(kind_script):
    r = kind_script("main", FAKE_DRIVER="550.54.15")
    assert r.rc == 1 and "need driver 575 or later" in r.stderr
    docker = r.calls("docker")
    assert not any(c.startswith(("docker run", "docker build")) for c in docker), docker
    assert not r.calls("nvkind") and not r.calls("helm")


@pytest.mark.parametrize("free_kb, min_gb, ok", [
    (10 * 1048576, "80", False), (80 * 1048576, "80", True), (500 * 1048576, None, True),
    (79 * 1048576, None, False), (1, "0", True),
])
def test_free_space_in_dockers_data_root_is_checked(kind_script, free_kb, min_gb, ok):
    env = {"FAKE_DF_KB": str(free_kb), "FAKE_DOCKER_ROOT": "/srv/docker"}
    if min_gb is not None:
        env["MIN_FREE_GB"] = min_gb
    r = kind_script("check_disk; echo PASSED", **env)
    assert ("PASSED" in r.stdout) == ok, r.stderr
    if not ok:
        assert f"only {free_kb // 1048576} GB free in Docker's data root /srv/docker" in r.stderr
        assert "MIN_FREE_GB=0" in r.stderr
    if min_gb == "0":
        assert not r.calls("df")
    else:
        assert r.calls("df") == ["df -Pk /srv/docker"]


def test_low_inotify_limits_warn_with_the_fix(kind_script):
    r = kind_script("read_sysctl() { echo 128; }; check_inotify; echo PASSED")
    assert "PASSED" in r.stdout
    assert "too many open files" in r.stderr and "fs.inotify.max_user_instances=8192" in r.stderr
    r = kind_script("read_sysctl() { echo 1048576; }; check_inotify")
    assert r.rc == 0 and r.stderr == ""


def test_pins_warn_when_kind_or_nvkind_differ(kind_script):
    r = kind_script("check_pins")
    assert r.rc == 0 and r.stderr == "", r.stderr
    r = kind_script("check_pins", FAKE_KIND_VERSION="kind v0.27.0 go1.24.0 linux/amd64",
                    FAKE_GO_NVKIND="\tmod\tgithub.com/NVIDIA/nvkind\tv0.0.0-20250911000000-4cd62b204d18")
    assert "not v0.31.0" in r.stderr and "go install sigs.k8s.io/kind@v0.31.0" in r.stderr
    assert "nvkind is not built from the pinned commit 24c190e165d4" in r.stderr


def test_the_header_and_the_readme_pin_the_same_versions():
    text = SCRIPT.read_text()
    commit = re.search(r"^NVKIND_COMMIT=([0-9a-f]{40})$", text, re.M).group(1)
    node_image = re.search(r"^DEFAULT_NODE_IMAGE=(\S+)$", text, re.M).group(1)
    readme = pages.page_holding("kind").read_text()   # the page with the kind walkthrough
    for doc in (text, readme):
        assert f"go install github.com/NVIDIA/nvkind/cmd/nvkind@{commit}" in doc
        assert "go install sigs.k8s.io/kind@v0.31.0" in doc
        assert "fs.inotify.max_user_watches" in doc
    assert "@latest" not in text and "nvkind@latest" not in readme
    assert re.fullmatch(r"kindest/node:v1\.35\.1@sha256:[0-9a-f]{64}", node_image)
    assert node_image in readme


# ------------------------------------------------------------------ nvkind's GPU set-up

def test_nvkind_failure_without_the_runtimeclass_stops_with_delete_and_rerun(kind_script):
    r = kind_script("create_cluster; echo UNREACHED", FAKE_NVKIND_RC="1", FAKE_RUNTIMECLASS_RC="1")
    assert r.rc == 1 and "UNREACHED" not in r.stdout
    assert "nvkind exited with status 1" in r.stderr
    assert "the nvidia RuntimeClass is missing" in r.stderr
    assert "delete the cluster and re-run: kind delete cluster --name mnist-serving && hack/kind/create-cluster.sh" \
        in r.stderr
    assert r.calls("nvkind") == ["nvkind cluster create --name mnist-serving --image "
                                 + re.search(r"^DEFAULT_NODE_IMAGE=(\S+)$", SCRIPT.read_text(), re.M).group(1)
                                 + " --config-template hack/kind/cluster.yaml"]


def test_nvkind_failure_without_a_cluster_names_nvkind(kind_script):
    r = kind_script("create_cluster", FAKE_NVKIND_RC="1", FAKE_NVKIND_CREATES="0")
    assert r.rc == 1 and "nvkind did not create cluster mnist-serving (exit status 1" in r.stderr


def test_nvkind_nonzero_with_a_complete_set_up_goes_on(kind_script):
    r = kind_script("create_cluster; echo PASSED", FAKE_NVKIND_RC="1")
    assert "PASSED" in r.stdout and "nvkind exited with status 1" in r.stderr
    assert "docker exec mnist-serving-worker nvidia-ctk --version" in r.log
    assert not any("control-plane nvidia-ctk" in c for c in r.log)


def test_a_node_without_nvidia_ctk_stops_after_create(kind_script):
    r = kind_script("create_cluster", FAKE_NO_CTK="mnist-serving-worker")
    assert r.rc == 1
    assert "nvidia-ctk is missing in node mnist-serving-worker" in r.stderr and "delete the cluster and re-run" in r.stderr


@pytest.mark.parametrize("env, says", [
    ({"FAKE_RUNTIMECLASS_RC": "1"}, "the nvidia RuntimeClass is missing"),
    ({"FAKE_NO_CTK": "mnist-serving-worker2"}, "nvidia-ctk is missing in node mnist-serving-worker2"),
    ({"FAKE_NODES": r"mnist-serving-control-plane"}, "has no worker node"),
    ({"FAKE_API_RC": "1"}, "kind export kubeconfig --name mnist-serving"),
])
def test_a_reused_cluster_is_checked_first(kind_script, env, says):
    env = {"FAKE_NODES": r"mnist-serving-control-plane\nmnist-serving-worker\nmnist-serving-worker2", **env}
    r = kind_script("create_cluster; echo UNREACHED", cluster_exists=True, **env)
    assert r.rc == 1 and "UNREACHED" not in r.stdout
    assert says in r.stderr and "delete the cluster and re-run" in r.stderr
    assert not r.calls("nvkind")


def test_a_healthy_cluster_is_reused(kind_script):
    r = kind_script("create_cluster; echo PASSED", cluster_exists=True)
    assert "PASSED" in r.stdout, r.stderr
    assert "exists; checking its GPU set-up before reusing it" in r.stdout
    assert not r.calls("nvkind")


def test_gpu_operator_values_are_nvidias_kind_path(kind_script):
    r = kind_script("install_gpu_operator")
    assert r.rc == 0, r.stderr
    (install,) = [c for c in r.calls("helm") if "gpu-operator nvidia/gpu-operator" in c]
    for setting in ("driver.enabled=false", "toolkit.enabled=false", "dcgmExporter.enabled=false",
                    "nfd.enabled=true"):
        assert f"--set {setting}" in install
    assert "--version v26.3.1" in install


# ------------------------------------------------------------------ the whole run

def _chart_install(r: Run) -> str:
    (install,) = [c for c in r.calls("helm") if "mnist-serving charts/mnist-serving" in c]
    return install


def test_a_run_deploys_this_build_under_a_tag_of_its_own(kind_script):
    first = kind_script("main")
    assert first.rc == 0, first.stderr
    tag_a = "dev-" + "a1" * 6
    install = _chart_install(first)
    assert f"--set image.repository=mnist-serving-operator --set image.tag={tag_a}" in install
    assert f"--set stageDefaults.images.stages=mnist-serving-operator:{tag_a}" in install
    assert "docker build -t mnist-serving-operator:dev ." in first.log
    assert f"docker tag mnist-serving-operator:dev mnist-serving-operator:{tag_a}" in first.log
    assert f"kind load docker-image mnist-serving-operator:{tag_a} --name mnist-serving" in first.log
    # No second tag over a real ghcr.io image.
    assert not any("ghcr.io" in c for c in first.log)
    assert first.calls("nvkind")
    # A re-run after a rebuild reuses the cluster and deploys the new build.
    second = kind_script("main", FAKE_IMAGE_ID=ID_B)
    assert second.rc == 0, second.stderr
    assert not second.calls("nvkind")
    assert "--set image.tag=dev-" + "b2" * 6 in _chart_install(second)


def test_a_registry_port_in_img_reaches_the_chart_intact(kind_script):
    r = kind_script("main", IMG="localhost:5001/mnist-serving/operator:dev", SKIP_SAMPLE="1")
    assert r.rc == 0, r.stderr
    ref = "localhost:5001/mnist-serving/operator:dev-" + "a1" * 6
    install = _chart_install(r)
    assert "--set image.repository=localhost:5001/mnist-serving/operator --set image.tag=dev-" in install
    assert f"--set stageDefaults.images.stages={ref}" in install
    assert not any("apply -n default -f" in c for c in r.calls("kubectl"))  # SKIP_SAMPLE=1


def test_a_bad_img_stops_in_preflight(kind_script):
    r = kind_script("main", IMG="Operator:dev")
    assert r.rc == 1 and "IMG=Operator:dev is not an image reference" in r.stderr
    assert not r.calls("nvkind") and not any(c.startswith("docker run") for c in r.log)


def test_kind_load_falls_back_to_a_single_platform_archive(kind_script):
    r = kind_script("load_image op:dev-x; echo PASSED", FAKE_LOAD_RC="1")
    assert "PASSED" in r.stdout, r.stderr
    save = [c for c in r.log if c.startswith("docker image save")]
    assert len(save) == 1 and "--platform linux/amd64" in save[0] and save[0].endswith(" op:dev-x")
    archive = save[0].split(" -o ")[1].split()[0]
    assert f"kind load image-archive {archive} --name mnist-serving" in r.log
    assert not Path(archive).exists()
    r = kind_script("load_image op:dev-x", FAKE_LOAD_RC="1", FAKE_ARCHIVE_RC="1")
    assert r.rc == 1 and "could not load op:dev-x into kind; see docs/troubleshooting.md, kind" in r.stderr


def test_sample_failure_names_the_describe_command(kind_script):
    r = kind_script("run_sample", FAKE_PHASE="Failed")
    assert r.rc == 1
    assert "the sample failed: kubectl --context kind-mnist-serving describe -n default -f " \
           "manifests/samples/mnistserving.yaml" in r.stderr


# ------------------------------------------------------------------ the pages' commands after the walkthrough

def _readme_block(name: str) -> str:
    """A marked shell block of the user-facing pages (README.md, docs/*.md), wherever it is."""
    return pages.block(name)


def test_readme_client_command_runs_the_client_job_as_the_operator_does(tmp_path):
    """The pages' client Pod (docs/results.md), created through a fake kubectl, against the
    sample's own client Job and Service as the operator renders them."""
    from mnist_operator.tools.render import render

    sample = (ROOT / "manifests" / "samples" / "mnistserving.yaml").read_text()
    name = yaml.safe_load(sample)["metadata"]["name"]
    objects = render(sample)
    job = next(o for o in objects if o["kind"] == "Job"
               and o["metadata"]["labels"].get("mnist.serving.dev/step") == "client")
    service = next(o for o in objects if o["kind"] == "Service")
    job_pod = job["spec"]["template"]["spec"]
    stages_image = job_pod["initContainers"][0]["image"]

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(
        '#!/usr/bin/env bash\nprintf "%s\\n" "$*" >>"$LOG"\n'
        f'case "$1" in get) echo "{stages_image}" ;; create) cat >"$POD" ;; esac\n')
    (bin_dir / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log"),
           "POD": str(tmp_path / "pod.yaml")}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_block("client-command")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0].startswith(f"get jobs -l app.kubernetes.io/instance={name} ")

    pod = yaml.safe_load((tmp_path / "pod.yaml").read_text())
    assert pod["kind"] == "Pod" and pod["spec"]["restartPolicy"] == "Never"
    (init,) = pod["spec"]["initContainers"]
    job_init = job_pod["initContainers"][0]
    assert init["image"] == stages_image and init["command"] == job_init["command"]
    assert init["volumeMounts"][0]["mountPath"] == job_init["volumeMounts"][0]["mountPath"]
    (client,) = pod["spec"]["containers"]
    job_client = job_pod["containers"][0]
    assert client["image"] == job_client["image"]
    env_of = lambda c: {e["name"]: e.get("value") for e in c.get("env", [])}  # noqa: E731
    assert env_of(client)["PYTHONPATH"] == env_of(job_client)["PYTHONPATH"]
    # the stage code and, read-only, the model volume where the Job finds its digits
    job_mounts = {m["name"]: m["mountPath"] for m in job_client["volumeMounts"]}
    assert {m["mountPath"] for m in client["volumeMounts"]} == {job_mounts["stages"], job_mounts["work"]}
    assert all(m.get("readOnly") for m in client["volumeMounts"]), client["volumeMounts"]
    claim = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
    (model,) = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert model["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    # restricted Pod Security and the Job's own requests and limits, so any namespace that
    # runs the pipeline (a quota on compute included) admits the pod
    for key in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile"):
        assert pod["spec"]["securityContext"][key] == job_pod["securityContext"][key], key
    for mine_c, theirs_c in ((init, job_init), (client, job_client)):
        assert mine_c["resources"] == theirs_c["resources"], mine_c["name"]
        for key in ("allowPrivilegeEscalation", "capabilities"):
            assert mine_c["securityContext"][key] == theirs_c["securityContext"][key], (mine_c["name"], key)
    assert pod["spec"]["automountServiceAccountToken"] is False
    # on Triton's node, where the ReadWriteOnce volume is
    triton = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["metadata"]["labels"]
    (term,) = pod["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= triton.items(), term

    def args(cmd: list[str]) -> dict[str, str]:
        assert cmd[:3] == ["python3", "-m", "mnist_jobs.client"]
        return dict(zip(cmd[3::2], cmd[4::2]))

    mine, theirs = args(client["command"]), args(job_client["command"])
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert mine["--http-url"] == f"{service['metadata']['name']}:{ports['http']}"
    assert mine["--grpc-url"] == f"{service['metadata']['name']}:{ports['grpc']}"
    assert theirs["--http-url"].startswith(service["metadata"]["name"] + ".")
    assert mine["--models"] == theirs["--models"] and mine["--data-source"] == theirs["--data-source"]
    assert mine["--data-dir"] == theirs["--data-dir"]
    assert [c.split()[0:2] for c in calls[1:]] == [["create", "-f"], ["wait", f"pod/{pod['metadata']['name']}"],
                                                   ["logs", "mnist-client"], ["delete", "pod"]]


def test_readme_commands_after_the_walkthrough_name_the_sample():
    name = yaml.safe_load((ROOT / "manifests" / "samples" / "mnistserving.yaml").read_text())["metadata"]["name"]
    readme = "\n".join(p.read_text() for p in pages.PAGES)   # README.md and the docs/ pages
    # The kubectl-get block is the test suite's recorded output (its resource is "sample").
    rest = re.sub(r"<!-- kubectl-get:begin -->.*?<!-- kubectl-get:end -->", "", readme, flags=re.S)
    for stale in ("mnist sample", "mnist/sample", "sample-triton", "instance=sample", "make docker-build`;"):
        assert stale not in rest, stale
    for command in (f"kubectl get mnist {name} -o yaml", f"kubectl describe mnist {name}",
                    f"--for=condition=Ready mnist/{name}", f"kubectl --context kind-mnist-serving get mnist {name}"):
        assert command in rest, command
