# syntax=docker/dockerfile:1.7
# The live Streamlit dashboard: reads the scored and stats topics, asks a worker for "Try it".
#
#   docker build -f infra/docker/dashboard.Dockerfile -t sentistream-dashboard .
#   docker run -p 8501:8501 -e SENTISTREAM_BROKER=kafka://kafka:9092 sentistream-dashboard

ARG PYTHON_VERSION=3.11

# ---- build: the project in a virtualenv (CPU torch: `model/` imports it, the dashboard never uses a GPU)
FROM python:${PYTHON_VERSION}-slim AS build
# Must equal the torch pin in pyproject.toml (a test checks it).
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

# ---- runtime: the virtualenv only, as a non-root user ------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/sentistream sentistream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    SENTISTREAM_DASHBOARD_ADDRESS=0.0.0.0 \
    SENTISTREAM_DASHBOARD_PORT=8501
USER 10001
WORKDIR /home/sentistream
EXPOSE 8501
# Marks the container unhealthy when Streamlit stops answering (no restart outside Swarm).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" \
        "http://127.0.0.1:${SENTISTREAM_DASHBOARD_PORT}/_stcore/health" || exit 1
ENTRYPOINT ["sentistream"]
CMD ["dashboard"]
