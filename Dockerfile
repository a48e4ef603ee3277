# The capforecast image: the workflow and its pinned stack, for the cloud executors
# (profiles/aws-batch, profiles/kubernetes) and for SageMaker training jobs.
#   docker build -t capforecast:$(git rev-parse --short HEAD) .
# tests/test_container.py keeps it in step with requirements.lock, the Makefile and the
# workflow's files. Not built by the tests: the project's machine has no Docker daemon.

# Python 3.11, as pyproject.toml (requires-python) and envs/*.yaml (python=3.11) require.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Pretrained models never hang on a model-hub download (as in the Makefile).
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MPLBACKEND=Agg \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    # `python -m capforecast.train` (SageMaker entry point) finds the library.
    PYTHONPATH=/opt/capforecast/scripts

# OpenMP runtime for LightGBM (AutoGluon's tabular models); slim images do not have it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# The pinned stack, exactly requirements.lock, in a venv (same steps as `make venv`): torch
# first, its CPU build from PyTorch's CPU index (the lock's torch==2.13.0 then matches
# 2.13.0+cpu), so nothing pulls a CUDA build; then the lock without resolving anything else.
COPY requirements.lock /opt/capforecast/requirements.lock
RUN python -m venv /opt/venv \
    && pip install --quiet "pip==26.3" \
    && pip install --quiet --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    && pip install --quiet --no-deps -r /opt/capforecast/requirements.lock \
    && pip check

# Jobs run as an unprivileged user; it owns the workflow directory, where results/ is written
# and where cloud executors unpack the workflow sources and stage S3 files.
RUN useradd --create-home --uid 1000 --user-group capforecast

# The workflow: Snakefile, rules, library and rule scripts, configuration and schema, conda
# envs (declared by the rules), report notebooks and captions, profiles.
WORKDIR /opt/capforecast
COPY --chown=capforecast:capforecast Snakefile pyproject.toml ./
COPY --chown=capforecast:capforecast rules/ rules/
COPY --chown=capforecast:capforecast scripts/ scripts/
COPY --chown=capforecast:capforecast config/ config/
COPY --chown=capforecast:capforecast envs/ envs/
COPY --chown=capforecast:capforecast notebooks/ notebooks/
COPY --chown=capforecast:capforecast report/ report/
COPY --chown=capforecast:capforecast profiles/ profiles/
RUN chown capforecast:capforecast /opt/capforecast
USER capforecast

# `docker run IMAGE` runs the whole workflow on the embedded synthetic fleet.
CMD ["snakemake", "--cores", "all"]
