# syntax=docker/dockerfile:1
# The Veil collector, CPU build. Build from the repository root:
#   docker build -f deploy/docker/collector.Dockerfile -t veil-collector:cpu .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/veil
ENV PATH=/opt/veil/bin:$PATH
# torch first, from the CPU index, so the collector extra does not pull the CUDA wheels (gigabytes).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sdk sdk
COPY collector collector
RUN pip install '.[collector]'

FROM python:3.11-slim
# The data folders exist in the image, owned by veil, so that Docker initialises named volumes mounted
# there (docker-compose.yml) with that owner.
RUN useradd --system --uid 10001 --home-dir /var/lib/veil --create-home veil \
    && install -d -o veil -g veil /var/lib/veil/spool /var/lib/veil/models
COPY --from=build /opt/veil /opt/veil
# Dashboards and provisioning files, for `veil grafana push` from inside the image.
COPY dashboards /opt/veil/dashboards
ENV PATH=/opt/veil/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VEIL_HOST=0.0.0.0 \
    VEIL_PORT=4318 \
    VEIL_DATA_DIR=/var/lib/veil \
    VEIL_DASHBOARDS_DIR=/opt/veil/dashboards
USER veil
WORKDIR /var/lib/veil
EXPOSE 4318
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4318/healthz', timeout=2)"]
ENTRYPOINT ["veil"]
CMD ["collector"]
