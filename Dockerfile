# syntax=docker/dockerfile:1
#
# One image for the API, the workers and Celery beat (compose.yaml picks the
# command). CPU by default; a CUDA build of the same image:
#
#   docker build -t aimusicseparator:cpu .
#   docker build -t aimusicseparator:gpu --build-arg TORCH_VARIANT=cuda .
#
# cpu:  torch from the PyTorch CPU index (~200 MB instead of ~3 GB of CUDA libraries).
# cuda: torch from PyPI, whose Linux wheel bundles CUDA 12 (cuBLAS, cuDNN) as
#       nvidia-* packages; CTranslate2 (Whisper) finds the same libraries through
#       LD_LIBRARY_PATH. The host needs the NVIDIA driver and container toolkit.
#
# Optional: bake model weights into the image (needs internet at build time):
#   docker build --build-arg MODELS="htdemucs tiny.en" .

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A compiler only for the rare dependency without a wheel; it stays in this stage.
# (Debian point releases drop old package versions: pinning them breaks rebuilds.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# torch first, from the index of the chosen variant, at the version requirements.txt pins;
# the requirements install then finds it satisfied (2.13.0+cpu matches torch==2.13.0).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN TORCH_VERSION="$(grep -E '^torch==' /tmp/requirements.txt | cut -d= -f3)" \
    && if [ "$TORCH_VARIANT" = "cpu" ]; then \
         pip install --index-url "$TORCH_CPU_INDEX" "torch==${TORCH_VERSION}"; \
       elif [ "$TORCH_VARIANT" = "cuda" ]; then \
         pip install "torch==${TORCH_VERSION}"; \
       else echo "TORCH_VARIANT must be cpu or cuda" >&2; exit 1; fi \
    && pip install -r /tmp/requirements.txt

# ---------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}

ARG TORCH_VARIANT=cpu
ARG MODELS=""

LABEL org.opencontainers.image.title="AiMusicSeparator backend" \
      org.opencontainers.image.description="Audio to stems, text and new music: Flask API + Celery workers"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    HOST=0.0.0.0 \
    PORT=5000 \
    DATA_DIR=/data \
    MODELS_DIR=/models \
    LOG_FORMAT=json \
    TORCH_VARIANT=${TORCH_VARIANT}

# An unprivileged user owns the data and model folders; the code stays root-owned.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data /models \
    && chown app:app /data /models

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY app ./app
COPY migrations ./migrations
COPY wsgi.py celery_worker.py gunicorn.conf.py pyproject.toml ./

USER 10001:10001
RUN if [ -n "$MODELS" ]; then \
      DATA_DIR=/tmp/build-data flask --app wsgi models download $MODELS && rm -rf /tmp/build-data; \
    fi

VOLUME ["/data", "/models"]
EXPOSE 5000

# Liveness of the API process; compose.yaml gives the workers a check of their own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5000'), timeout=4)"]

# gunicorn.conf.py: HOST:PORT, gthread, WEB_CONCURRENCY processes x GUNICORN_THREADS threads.
CMD ["gunicorn", "wsgi:app"]
