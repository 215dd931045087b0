# syntax=docker/dockerfile:1.7
# The stream worker on an NVIDIA GPU: CUDA PyTorch (what --backend auto picks on a GPU, in half
# precision) and onnxruntime-gpu (for --backend onnx --device cuda).
#
#   docker build -f infra/docker/worker-gpu.Dockerfile -t sentistream-worker-gpu .
#   docker run --gpus 1 -v $PWD/models/my-bundle:/models/bundle:ro sentistream-worker-gpu
#
# One CUDA major version, CUDA_MAJOR, runs through the whole image. There is no CUDA base image:
# PyPI's torch wheel depends on the CUDA toolkit and cuDNN as pip packages (nvidia-*, cuda-toolkit),
# and onnxruntime-gpu's `cuda` and `cudnn` extras ask for the same major, so pip installs the CUDA
# libraries once, in the virtualenv. A CUDA base image would ship a second copy of several GB.
# The host needs the NVIDIA driver for that CUDA major (CUDA 13: driver 580 or newer) and the NVIDIA
# Container Toolkit; the driver itself is mounted in by the toolkit, never baked in.
# `python infra/check_gpu_pins.py` asks PyPI which CUDA major each pin below really depends on;
# tests/infra/test_manifests.py fails when a pin here names another major than CUDA_MAJOR.
# Bake a bundle in exactly as in worker.Dockerfile (--build-arg MODEL_SOURCE=local --build-arg MODEL_DIR=...).

ARG PYTHON_VERSION=3.11
ARG MODEL_SOURCE=none

# ---- build: a virtualenv with CUDA torch, the project, and onnxruntime-gpu in place of onnxruntime
FROM python:${PYTHON_VERSION}-slim AS build
ARG CUDA_MAJOR=13
# Must equal the pins in pyproject.toml (torch; the `gpu` extra's onnxruntime-gpu): a test checks it.
# PyPI's Linux torch wheel is the CUDA build (torch 2.15.0: CUDA 13.2, cuDNN 9 for CUDA 13).
ARG TORCH_VERSION=2.15.0
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
RUN pip install "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sentistream ./sentistream
COPY model ./model
COPY training ./training
COPY stream ./stream
COPY dashboard ./dashboard
COPY infra ./infra
# Both wheels install the `onnxruntime` package: remove the CPU one before the GPU one goes in, or
# uninstalling it later would delete files the GPU wheel shares. The extras bring ONNX Runtime's
# CUDA runtime and cuDNN (the CUDA 13 builds; torch already brought cuBLAS of the same major).
# No `pip check` here: it would report `onnxruntime` missing, which onnxruntime-gpu provides.
RUN pip install . \
    && pip uninstall -y onnxruntime \
    && pip install "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" \
    && python -c "import onnxruntime, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '| onnxruntime', onnxruntime.__version__)" \
    && python -c "import sys, torch; sys.exit(torch.version.cuda.split('.')[0] != sys.argv[1])" "${CUDA_MAJOR}"

# ---- model: an empty /bundle, or the bundle named by MODEL_DIR ---------------------------------
FROM python:${PYTHON_VERSION}-slim AS model-none
RUN mkdir /bundle

FROM python:${PYTHON_VERSION}-slim AS model-local
ARG MODEL_DIR=models/bundle
COPY ${MODEL_DIR}/ /bundle/

FROM model-${MODEL_SOURCE} AS model

# ---- runtime: slim Python, the virtualenv (with its CUDA libraries) and the bundle, non-root ---
FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/sentistream sentistream
COPY --from=build /opt/venv /opt/venv
# torch finds its pip CUDA libraries by itself. ONNX Runtime's CUDA provider has no RUNPATH: it needs
# libcudart.so.13, libcublas(Lt).so.13 and libcurand.so.10 by name and dlopens libcudnn.so.9, so the
# dynamic loader is told where pip put them (never a stub libcuda: the driver's comes from the host).
RUN find /opt/venv/lib -path "*/site-packages/nvidia/*" -name "lib*.so*" ! -path "*/stubs/*" \
        ! -name "libcuda.so*" -printf "%h\n" | sort -u \
        > /etc/ld.so.conf.d/sentistream-pip-cuda.conf \
    && ldconfig
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
# Marks the container unhealthy (docker ps, compose's depends_on: service_healthy); plain Docker and
# compose do not restart an unhealthy container, only Swarm replaces it. Kubernetes uses its probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" \
        "http://127.0.0.1:${SENTISTREAM_WEB_PORT}/health" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["sentistream"]
CMD ["worker"]
