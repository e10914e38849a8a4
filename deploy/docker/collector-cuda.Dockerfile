# syntax=docker/dockerfile:1
# The Veil collector with a CUDA build of torch, for GPU classifiers (bf16 batches). Build from the
# repository root:
#   docker build -f deploy/docker/collector-cuda.Dockerfile -t veil-collector:cuda .
# The torch wheels bundle the CUDA runtime, so the base image only needs the driver hooks of the NVIDIA
# container toolkit; TORCH_INDEX picks the CUDA version of the wheels (the host driver must support it).
ARG CUDA_BASE=nvidia/cuda:12.8.1-base-ubuntu24.04

FROM ${CUDA_BASE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/veil
ENV PATH=/opt/veil/bin:$PATH
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sdk sdk
COPY collector collector
RUN pip install '.[collector]'

FROM ${CUDA_BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/veil --create-home veil \
    && install -d -o veil -g veil /var/lib/veil/spool /var/lib/veil/models
COPY --from=build /opt/veil /opt/veil
COPY dashboards /opt/veil/dashboards
ENV PATH=/opt/veil/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VEIL_HOST=0.0.0.0 \
    VEIL_PORT=4318 \
    VEIL_DATA_DIR=/var/lib/veil \
    VEIL_DASHBOARDS_DIR=/opt/veil/dashboards \
    VEIL_CLASSIFIER_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER veil
WORKDIR /var/lib/veil
EXPOSE 4318
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4318/healthz', timeout=2)"]
ENTRYPOINT ["veil"]
CMD ["collector"]
