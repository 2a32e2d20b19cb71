# syntax=docker/dockerfile:1
# The classifier: a CPU service that asks TGI; the adapter's classifier.json (label set, prompt
# version) is baked from MODEL_DIR or mounted at /models/classifier. TGI serves the weights.
# Build from the repository root:
#   docker build -f deploy/containers/classifier.Dockerfile -t lmrc-classifier .
ARG PYTHON_BASE=python:3.11-slim-bookworm

FROM ${PYTHON_BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lmrc ./lmrc
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir ".[classifier]"

FROM ${PYTHON_BASE}
ARG MODEL_DIR=models/classifier/rc-smollm2-135m-lora-v2
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin lmrc
COPY --from=build /opt/venv /opt/venv
COPY ${MODEL_DIR}/classifier.json /models/classifier/classifier.json
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLASSIFIER_ARTIFACT_DIR=/models/classifier
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["lmrc-classifier"]
