# The operator image: the kopf operator (control plane) plus the mnist_jobs
# stage package. Stages run inside stock NGC images; each stage pod gets the
# package from this image with an init container that copies it into an
# emptyDir, which the stage container puts on PYTHONPATH:
#     cp -R /opt/mnist-serving/jobs/. /mnt/stages/     (then PYTHONPATH=/mnt/stages)
# No torch, no Triton in this image.
#
#   docker build -t mnist-serving-operator:dev .     (or: make docker-build)

# One pinned base for both stages: the wheel is pure Python, but building and
# installing under the same interpreter keeps the venv's paths valid.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ----------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
# The operator's runtime dependencies, pinned (the versions the tests run).
# Until pyproject's base dependencies are the operator's alone, the wheel is
# installed with --no-deps and these are installed explicitly, so torch,
# onnxruntime and tritonclient never enter the image.
ARG OPERATOR_REQUIREMENTS="kopf==1.45.2 kubernetes==37.0.2 PyYAML==6.0.4 Jinja2==3.1.6 prometheus-client==0.26.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m pip install "setuptools==80.9.0" "wheel==0.45.1"
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY jobs/ jobs/
# jobs/mnist_jobs/templates/model_repo is a symlink to ../../../model_repo: with
# model_repo/ in the context it resolves, so the wheel gets the templates as
# package data and the `cp -RL` below gives the stage package a real copy.
COPY model_repo/ model_repo/
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps /dist/mnist_serving-*.whl \
 && /opt/venv/bin/pip install ${OPERATOR_REQUIREMENTS} \
 && /opt/venv/bin/mnist-serving --help >/dev/null \
 && cp -RL jobs/mnist_jobs /opt/mnist_jobs

# ----------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mnist-serving-operator" \
      org.opencontainers.image.description="Kubernetes operator for the NVIDIA Triton MNIST walkthrough (MnistServing)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MNIST_SERVING_JOBS_DIR=/opt/mnist-serving/jobs
COPY --from=builder /opt/venv /opt/venv
# The stage package as plain source (no bytecode: stage images run other
# Python versions); stage pods copy it out with the `cp` line at the top.
COPY --from=builder /opt/mnist_jobs /opt/mnist-serving/jobs/mnist_jobs
# Non-root, numeric so runAsNonRoot can verify it without /etc/passwd lookups.
RUN groupadd --system --gid 65532 mnist \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mnist
USER 65532:65532
WORKDIR /tmp
# 8080: kopf liveness (/healthz); 8081: Prometheus metrics (/metrics, --metrics-port).
EXPOSE 8080 8081
ENTRYPOINT ["mnist-serving", "operator"]
