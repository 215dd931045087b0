# syntax=docker/dockerfile:1.7
# The stream worker on an NVIDIA GPU: CUDA PyTorch (what --backend auto picks on a GPU, in half
# precision) and onnxruntime-gpu (for --backend onnx --device cuda) on a CUDA + cuDNN runtime base.
#
#   docker build -f infra/docker/worker-gpu.Dockerfile -t sentistream-worker-gpu .
#   docker run --gpus 1 -v $PWD/models/my-bundle:/models/bundle:ro sentistream-worker-gpu
#
# Needs the NVIDIA driver and the NVIDIA Container Toolkit on the host. Bake a bundle in exactly as
# in worker.Dockerfile (--build-arg MODEL_SOURCE=local --build-arg MODEL_DIR=...).

# CUDA 12 + cuDNN 9: what onnxruntime-gpu's PyPI wheels and PyTorch's cu128 wheels are built for.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG MODEL_SOURCE=none

# ---- build: a virtualenv with CUDA torch, the project, and onnxruntime-gpu in place of onnxruntime
FROM ${CUDA_IMAGE} AS build
# Must equal the pins in pyproject.toml (torch; the `gpu` extra's onnxruntime-gpu): a test checks it.
ARG TORCH_VERSION=2.15.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sentistream ./sentistream
COPY model ./model
COPY training ./training
COPY stream ./stream
COPY dashboard ./dashboard
COPY infra ./infra
# Both wheels install the `onnxruntime` package: remove the CPU one before the GPU one goes in,
# or uninstalling it later would delete files the GPU wheel shares.
RUN pip install . \
    && pip uninstall -y onnxruntime \
    && pip install "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"

# ---- model: an empty /bundle, or the bundle named by MODEL_DIR ---------------------------------
FROM ${CUDA_IMAGE} AS model-none
RUN mkdir /bundle

FROM ${CUDA_IMAGE} AS model-local
ARG MODEL_DIR=models/bundle
COPY ${MODEL_DIR}/ /bundle/

FROM model-${MODEL_SOURCE} AS model

# ---- runtime: CUDA runtime + python3, the virtualenv and the bundle, as a non-root user --------
FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/sentistream sentistream
COPY --from=build /opt/venv /opt/venv
COPY --from=model --chown=10001:10001 /bundle/ /models/bundle/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    SENTISTREAM_MODEL=/models/bundle \
    SENTISTREAM_DEVICE=cuda \
    SENTISTREAM_WEB_HOST=0.0.0.0 \
    SENTISTREAM_WEB_PORT=6066
USER 10001
WORKDIR /home/sentistream
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" \
        "http://127.0.0.1:${SENTISTREAM_WEB_PORT}/health" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["sentistream"]
CMD ["worker"]
