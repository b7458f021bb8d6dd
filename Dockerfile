# syntax=docker/dockerfile:1
# OneMap image: one image for every process; the command picks the part
# (`worker`, `dashboard`, `replay ...`). Configuration is by ONEMAP_* environment variables.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a self-contained venv -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/onemap
ENV PATH=/opt/onemap/bin:$PATH
WORKDIR /src
# Every dependency ships manylinux wheels, so no compiler is needed.
COPY . .
RUN pip install . && python -m compileall -q /opt/onemap

# --- runtime: the venv, a non-root user, nothing else ------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="onemap" \
      org.opencontainers.image.description="OneMap real-time emergency risk engine" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 onemap \
 && useradd --system --uid 10001 --gid onemap --home-dir /var/lib/onemap \
            --shell /usr/sbin/nologin onemap \
 && install -d -o onemap -g onemap -m 0750 /var/lib/onemap
COPY --from=build /opt/onemap /opt/onemap
ENV PATH=/opt/onemap/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ONEMAP_DATA_DIR=/var/lib/onemap
WORKDIR /var/lib/onemap
USER onemap:onemap
# 8000: `onemap dashboard` (page, /healthz, /metrics); 9108: `onemap worker` /metrics.
EXPOSE 8000 9108
ENTRYPOINT ["onemap"]
CMD ["--help"]
