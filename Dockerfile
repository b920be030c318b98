# syntax=docker/dockerfile:1
# dmriprep_motion container: docker build -t dmriprep-motion:latest .
#
# Stage 1 ("builder") installs the dependencies into a virtual environment BEFORE
# copying the source, so that editing the code only rebuilds the last layers.
# Stage 2 ("runtime") copies that environment onto a clean, pinned base image.
#
# ANTs: the image uses the `antsRegistration` console script of the package, which
# runs the ANTs compiled inside antspyx. To use an official ANTs build instead, see
# docs/containers.rst ("Using an official ANTs image").

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ------------------------------------------------------------------ builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir "pip==24.3.1" "hatchling==1.27.0"

WORKDIR /src
# Dependencies only (read from pyproject.toml): this layer is cached until they change.
COPY pyproject.toml /src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# The package itself (no dependency resolution: everything is already installed).
COPY README.md /src/
COPY dmriprep_motion /src/dmriprep_motion
RUN pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && pip check

# ------------------------------------------------------------------ runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="dmriprep_motion" \
      org.opencontainers.image.description="Leave-one-volume-out head-motion correction for diffusion MRI (BIDS App)" \
      org.opencontainers.image.licenses="Apache-2.0"

# pandoc renders the methods boilerplate (logs/CITATION.md) to HTML, with its references,
# for the report's Methods section. Pinned to Debian bookworm's 2.17.1.1 (any revision).
RUN apt-get update \
    && apt-get install -y --no-install-recommends "pandoc=2.17.1.1-*" \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/dmriprep \
    TEMPLATEFLOW_HOME=/home/dmriprep/.cache/templateflow \
    MPLCONFIGDIR=/tmp/matplotlib \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    NIPYPE_NO_ET=1 \
    DMRIPREP_MOTION_ANTS=auto \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Non-root user. Singularity/Apptainer and `docker run -u` run the container as the
# calling user (any UID), so HOME and the TemplateFlow cache (initialized here, so a
# read-only image never needs to write it) are world-writable; matplotlib writes to /tmp.
RUN useradd --create-home --home-dir /home/dmriprep --uid 1000 --shell /bin/bash dmriprep \
    && mkdir -p "$TEMPLATEFLOW_HOME" \
    && python -c "import templateflow.conf" \
    && chmod -R a+rwX /home/dmriprep

USER 1000:1000
WORKDIR /tmp

# Smoke test: the entry point and the ANTs backend work in the final image.
RUN dmriprep-motion --version && antsRegistration --version

ENTRYPOINT ["dmriprep-motion"]
