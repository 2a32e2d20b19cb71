# syntax=docker/dockerfile:1
# The sink: relation events into FalkorDB (a server) or the embedded LadybugDB (mount a volume at
# /data). It also carries the `lmrc` command, which the Helm chart's topic Job runs.
# Build from the repository root:
#   docker build -f deploy/containers/sink.Dockerfile -t lmrc-sink .
ARG PYTHON_BASE=python:3.11-slim-bookworm

FROM ${PYTHON_BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lmrc ./lmrc
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir ".[sink]"

FROM ${PYTHON_BASE}
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin lmrc \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SINK_LADYBUG_PATH=/data/graph.lbug
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["lmrc-sink"]
