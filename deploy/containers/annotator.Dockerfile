# syntax=docker/dockerfile:1
# The annotator: spaCy's English pipeline (sentences, tokens) and the trained mention tagger (ONNX,
# CPU). The tagger is baked from MODEL_DIR (default: the shipped one) or mounted at
# /models/annotator; without an ONNX file beside it (`lmrc annotator export`), the export stage
# makes one. Build from the repository root:
#   docker build -f deploy/containers/annotator.Dockerfile -t lmrc-annotator .
ARG PYTHON_BASE=python:3.11-slim-bookworm

FROM ${PYTHON_BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY lmrc ./lmrc
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[annotator]" \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -r requirements/spacy-model.txt

FROM ${PYTHON_BASE} AS model
ARG MODEL_DIR=models/annotator
COPY ${MODEL_DIR} /models/annotator
COPY --from=build /src /src
# Export to ONNX only when the context has no export: torch lives in this stage alone.
RUN if ! ls /models/annotator/*.onnx >/dev/null 2>&1; then \
        python -m venv /opt/export \
        && /opt/export/bin/pip install --no-cache-dir "/src[train]" \
        && /opt/export/bin/lmrc annotator export --tagger /models/annotator; \
    fi

FROM ${PYTHON_BASE}
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin lmrc
COPY --from=build /opt/venv /opt/venv
COPY --from=model /models/annotator /models/annotator
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ANNOTATOR_TAGGER_DIR=/models/annotator
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["lmrc-annotator"]
