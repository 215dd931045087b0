# syntax=docker/dockerfile:1.7
# The stream worker on CPU: `sentistream worker` in one Kafka consumer group, scaled by replicas.
#
#   docker build -f infra/docker/worker.Dockerfile -t sentistream-worker .
#   docker build -f infra/docker/worker.Dockerfile -t sentistream-worker \
#       --build-arg MODEL_SOURCE=local --build-arg MODEL_DIR=models/my-bundle .   # bake a bundle in
#
# Without a baked bundle, mount one at /models/bundle (the default SENTISTREAM_MODEL), or set
# SENTISTREAM_BACKEND=vader to run the lexicon baseline with no model at all.

ARG PYTHON_VERSION=3.11
# none: the image holds no model (mount one); local: copy MODEL_DIR of the build context in.
ARG MODEL_SOURCE=none

# ---- build: a virtualenv with the project, torch from PyTorch's CPU index -------------------
FROM python:${PYTHON_VERSION}-slim AS build
# Must equal the torch pin in pyproject.toml (a test checks it); the CPU wheel avoids ~3 GB of CUDA.
ARG TORCH_VERSION=2.15.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sentistream ./sentistream
COPY model ./model
COPY training ./training
COPY stream ./stream
COPY dashboard ./dashboard
COPY infra ./infra
RUN pip install . && pip check

# ---- model: an empty /bundle, or the bundle named by MODEL_DIR ---------------------------------
FROM python:${PYTHON_VERSION}-slim AS model-none
RUN mkdir /bundle

FROM python:${PYTHON_VERSION}-slim AS model-local
ARG MODEL_DIR=models/bundle
COPY ${MODEL_DIR}/ /bundle/

FROM model-${MODEL_SOURCE} AS model

# ---- runtime: the virtualenv and the bundle, nothing else, as a non-root user -----------------
FROM python:${PYTHON_VERSION}-slim AS runtime
# /var/lib/sentistream/history: the sink's folder (compose mounts a named volume there, which takes
# the folder's owner when it is new, so the sink's user can write it).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/sentistream sentistream \
    && install -d -o 10001 -g 10001 /var/lib/sentistream/history
COPY --from=build /opt/venv /opt/venv
COPY --from=model --chown=10001:10001 /bundle/ /models/bundle/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SENTISTREAM_MODEL=/models/bundle \
    SENTISTREAM_DEVICE=cpu \
    SENTISTREAM_WEB_HOST=0.0.0.0 \
    SENTISTREAM_WEB_PORT=6066
USER 10001
WORKDIR /home/sentistream
EXPOSE 6066
# The worker answers /health only once it is consuming. A failing check marks the container
# unhealthy (docker ps, compose's depends_on: service_healthy); plain Docker and compose do not
# restart it for that, only Swarm replaces unhealthy containers. Kubernetes uses its own probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" \
        "http://127.0.0.1:${SENTISTREAM_WEB_PORT}/health" || exit 1
# SIGTERM lets the worker finish its micro-batch and commit before it leaves the group.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sentistream"]
CMD ["worker"]
