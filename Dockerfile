# thalamus_bidsapp container image (BIDS App).
#
# Targets:
#   core  - the app with antspyx, deepbet, MindGlide, MeshNet weights and the
#           MindGlide weights; no FSL, FreeSurfer or DBSegment. For places where
#           those downloads are impossible (and for the project's own CI).
#   full  - (the default, last stage) core + FSL (trimmed) + FreeSurfer 7.4.1
#           (trimmed) + DBSegment 0.2.2 in its own virtual environment + model.
#
# Build (full, CPU PyTorch):
#   docker build \
#     --build-arg MINDGLIDE_SHA256=<sha256 of the .pt> \
#     --build-arg FREESURFER_SHA256=<sha256 of the 7.4.1 tarball> \
#     --build-arg DBSEGMENT_MODEL_SHA256=<sha256 of deep_brain_seg_model_7f.zip> \
#     -t thalamusbidsapp/thalamus-bidsapp:0.1.0 .
# Core only:      docker build --target core --build-arg MINDGLIDE_SHA256=... .
# CUDA PyTorch:   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# Offline weights (no download): --build-arg WEIGHTS_SOURCE=context with the
#   files under ./container-weights/ in the build context (see weights-context).
#
# Checksums that are not published anywhere we could verify are mandatory build
# arguments without a default: the build stops with a message rather than
# trusting whatever the server returns.
#
# TemplateFlow: the app does not query TemplateFlow at run time (registration is
# subject-space only), so no templates are pre-fetched; TEMPLATEFLOW_HOME still
# points at a writable place in case a dependency looks it up.
#
# The FreeSurfer license is never baked in: pass --fs-license-file or FS_LICENSE.

# Pinned by date tag; override with a digest-pinned reference in release CI.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-20250520-slim
ARG MICROMAMBA_IMAGE=docker.io/mambaorg/micromamba:1.5.10-bookworm-slim
# Where the model weights come from: "download" (pinned URLs + sha256) or
# "context" (files copied from ./container-weights, still sha256-checked).
ARG WEIGHTS_SOURCE=download

# --------------------------------------------------------------------------
# Runtime base shared by every final stage: Debian's Python 3.11 (the ABI of
# the CPU torch wheel) and the shared libraries the wheels expect.
FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates=20250419~deb12u2 \
        libgomp1=12.2.0-14+deb12u1 \
        python3=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/*

# --------------------------------------------------------------------------
# Build the app's virtual environment; only /opt/venv is carried forward.
FROM base AS python-build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3-venv=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/*
# PyTorch CPU by default; a CUDA build is a different index, e.g.
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Not declared with defaults on purpose: when a builder passes them (a local
# wheel folder mounted at build time, a CA bundle for a TLS-inspecting proxy)
# pip reads them from the environment; when absent they stay unset. The CA
# bundle is mounted, never copied, so it does not end up in a layer.
ARG PIP_FIND_LINKS
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# The app's dependencies first, in their own layer, so that a change to the
# app's code does not reinstall them. These are the versions the test suite
# last passed with, pinned so a release image is reproducible (pyproject.toml
# keeps ranges); keep them in step with pyproject's dependencies.
RUN /opt/venv/bin/pip install \
        "numpy==2.3.5" "scipy==1.15.3" "pandas==3.1.1" "nibabel==5.4.2" \
        "pybids==0.22.0" "niworkflows==1.14.5" "nipype==1.11.0" \
        "templateflow==25.1.2" "statsmodels==0.15.0" "pingouin==0.7.0" \
        "matplotlib==3.11.2" "seaborn==0.13.2" "antspyx==0.6.3" \
        "deepbet==1.0.2" "PyYAML==6.0.3" "connected-components-3d==4.1.1" \
        "platformdirs==4.14.7" "scikit-image==0.26.0" "mindglide==1.3.0" \
        "monai==1.6.1" "huggingface_hub==2.4.0" "jinja2==3.1.6"
COPY pyproject.toml README.md /src/
COPY thalamus_bidsapp /src/thalamus_bidsapp
RUN /opt/venv/bin/pip install --no-deps "/src" \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/thalamus-bidsapp --version

# --------------------------------------------------------------------------
# curl for the stages that download pinned files (weights, FreeSurfer, DBSegment's model).
# Its child stages restate SHELL: hadolint does not follow it across stages.
FROM base AS fetcher
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        curl=7.88.1-10+deb12u15 \
    && rm -rf /var/lib/apt/lists/*

# Model weights, downloaded from pinned URLs and checked by sha256.
FROM fetcher AS weights-download
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# MeshNet (brainchop, MIT): the commit and checksums match
# thalamus_bidsapp/data/meshnet_models.json.
ARG MESHNET_COMMIT=4c87885f3a2a8835e260d521dcec922b58d91d41
ARG MESHNET_JSON_SHA256=d28521c0965e452c371314e4b5b4dcef7b19aa91241b17ef894ac24952139701
ARG MESHNET_BIN_SHA256=7039651d91c4cee0b7b1ddfe93fe2f5cb9b71d99f5a126fdef407e2a36bb52d4
# MindGlide (Hugging Face MS-PINPOINT/mindglide): the revision is the one
# mindglide 1.3.0 pins (HF_MODEL_REVISION in mindglide/infer.py). No sha256 for
# the file is published where we could check it, so it is a required argument.
ARG MINDGLIDE_REVISION=a1969821c0a4a37ae54f649a9a0c6fd1b8a48e26
ARG MINDGLIDE_FILE=_20240404_conjurer_trained_dice_7733.pt
ARG MINDGLIDE_SHA256
WORKDIR /opt/models/meshnet/model30chan18cls
RUN base="https://raw.githubusercontent.com/neuroneural/brainchop/${MESHNET_COMMIT}/public/models/model30chan18cls" \
    && curl -fsSL --retry 3 -o model.json "${base}/model.json" \
    && curl -fsSL --retry 3 -o model.bin "${base}/model.bin" \
    && printf '%s  model.json\n%s  model.bin\n' "${MESHNET_JSON_SHA256}" "${MESHNET_BIN_SHA256}" | sha256sum -c -
WORKDIR /opt/models/mindglide
RUN if [ -z "${MINDGLIDE_SHA256}" ]; then \
        echo "MINDGLIDE_SHA256 is required (sha256 of ${MINDGLIDE_FILE} at revision ${MINDGLIDE_REVISION})" >&2; exit 1; \
    fi \
    && curl -fsSL --retry 3 -o "${MINDGLIDE_FILE}" \
        "https://huggingface.co/MS-PINPOINT/mindglide/resolve/${MINDGLIDE_REVISION}/${MINDGLIDE_FILE}" \
    && echo "${MINDGLIDE_SHA256}  ${MINDGLIDE_FILE}" | sha256sum -c -

# The same files from the build context (./container-weights/meshnet/...,
# optionally ./container-weights/mindglide/<file>), for builds without network
# to GitHub or Hugging Face. Checked against the same sums; a missing MindGlide
# file leaves the method unavailable (the app then skips it with a reason).
FROM base AS weights-context
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG MESHNET_JSON_SHA256=d28521c0965e452c371314e4b5b4dcef7b19aa91241b17ef894ac24952139701
ARG MESHNET_BIN_SHA256=7039651d91c4cee0b7b1ddfe93fe2f5cb9b71d99f5a126fdef407e2a36bb52d4
ARG MINDGLIDE_FILE=_20240404_conjurer_trained_dice_7733.pt
ARG MINDGLIDE_SHA256
COPY container-weights/ /opt/models/
WORKDIR /opt/models/meshnet/model30chan18cls
RUN printf '%s  model.json\n%s  model.bin\n' "${MESHNET_JSON_SHA256}" "${MESHNET_BIN_SHA256}" | sha256sum -c - \
    && mkdir -p /opt/models/mindglide \
    && if [ -f "/opt/models/mindglide/${MINDGLIDE_FILE}" ]; then \
        if [ -z "${MINDGLIDE_SHA256}" ]; then echo "MINDGLIDE_SHA256 is required with a MindGlide file" >&2; exit 1; fi; \
        echo "${MINDGLIDE_SHA256}  /opt/models/mindglide/${MINDGLIDE_FILE}" | sha256sum -c -; \
    fi

# hadolint ignore=DL3006
FROM weights-${WEIGHTS_SOURCE} AS weights

# --------------------------------------------------------------------------
# core: the app, antspyx, deepbet, MindGlide and the weights; no FSL,
# FreeSurfer or DBSegment.
FROM base AS core
ARG VERSION=0.1.0
ARG IMAGE_NAME=thalamusbidsapp/thalamus-bidsapp
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="thalamus-bidsapp (core)" \
      org.opencontainers.image.description="BIDS App benchmarking thalamus segmentation in MS; core image without FSL, FreeSurfer or DBSegment" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="https://github.com/thalamus-bidsapp/thalamus_bidsapp" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=python-build /opt/venv /opt/venv
COPY --from=weights /opt/models /opt/models
# A fixed non-root user; HOME is world-writable (sticky) so that
# `docker run -u $(id -u):$(id -g)` with any uid still has caches and configs.
RUN useradd --uid 1000 --user-group --no-log-init --create-home --home-dir /home/thalamus thalamus \
    && chmod 1777 /home/thalamus \
    && mkdir -p /home/thalamus/.cache/templateflow \
    && chmod -R 1777 /home/thalamus/.cache
# Runs are offline by design: weights are in the image, downloads are refused.
ENV PATH=/opt/venv/bin:${PATH} \
    HOME=/home/thalamus \
    THALAMUS_MESHNET_MODEL=/opt/models/meshnet/model30chan18cls \
    MODEL_PATH=/opt/models/mindglide/_20240404_conjurer_trained_dice_7733.pt \
    HF_HUB_OFFLINE=1 \
    TEMPLATEFLOW_HOME=/home/thalamus/.cache/templateflow \
    NIPYPE_NO_ET=1 \
    MPLBACKEND=Agg \
    MKL_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    THALAMUS_CONTAINER="docker:${IMAGE_NAME}:${VERSION}-core"
WORKDIR /tmp
USER 1000:1000
ENTRYPOINT ["thalamus-bidsapp"]
CMD ["--help"]

# --------------------------------------------------------------------------
# FSL, trimmed to what the app calls (FIRST, FLIRT, fslreorient2std, SIENA and
# their dependencies), from FSL's conda channel. Conda checks each package
# against the sha256 in the channel's repodata. Versions of bet2, flirt, fast4
# and miscmaths are those of FSL 6.0.7.7.
FROM ${MICROMAMBA_IMAGE} AS fsl
# Writing /opt needs root in this throw-away stage; only /opt/fsl is copied on.
# hadolint ignore=DL3002
USER root
RUN micromamba create -y -p /opt/fsl \
        -c https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/public/ -c conda-forge \
        "fsl-bet2=2111.4" "fsl-flirt=2111.2" "fsl-fast4=2111.3" "fsl-miscmaths=2203.2" \
        fsl-first fsl-siena fsl-avwutils fsl-misc_scripts fsl-misc_tcl \
        fsl-data_first_models_317_bin fsl-data_first_models_336_bin fsl-data_standard \
    && micromamba clean -y --all \
    && rm -rf /opt/fsl/pkgs /opt/fsl/include /opt/fsl/share/doc

# --------------------------------------------------------------------------
# FreeSurfer 7.4.1, trimmed as fMRIPrep does: what recon-all -all needs stays
# (fsaverage for the surface registration), atlases for other tools go.
FROM fetcher AS freesurfer
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG FREESURFER_VERSION=7.4.1
ARG FREESURFER_SHA256
RUN if [ -z "${FREESURFER_SHA256}" ]; then \
        echo "FREESURFER_SHA256 is required (sha256 of freesurfer-linux-ubuntu22_x86_64-${FREESURFER_VERSION}.tar.gz)" >&2; exit 1; \
    fi \
    && curl -fsSL --retry 3 -o /tmp/fs.tar.gz \
        "https://surfer.nmr.mgh.harvard.edu/pub/dist/freesurfer/${FREESURFER_VERSION}/freesurfer-linux-ubuntu22_x86_64-${FREESURFER_VERSION}.tar.gz" \
    && echo "${FREESURFER_SHA256}  /tmp/fs.tar.gz" | sha256sum -c - \
    && tar -xzf /tmp/fs.tar.gz --no-same-owner -C /opt \
        --exclude='freesurfer/average/mult-comp-cor' \
        --exclude='freesurfer/diffusion' \
        --exclude='freesurfer/docs' \
        --exclude='freesurfer/fsfast' \
        --exclude='freesurfer/lib/cuda' \
        --exclude='freesurfer/lib/qt' \
        --exclude='freesurfer/matlab' \
        --exclude='freesurfer/subjects/V1_average' \
        --exclude='freesurfer/subjects/bert' \
        --exclude='freesurfer/subjects/cvs_avg35' \
        --exclude='freesurfer/subjects/cvs_avg35_inMNI152' \
        --exclude='freesurfer/subjects/fsaverage3' \
        --exclude='freesurfer/subjects/fsaverage4' \
        --exclude='freesurfer/subjects/fsaverage_sym' \
        --exclude='freesurfer/trctrain' \
    && rm -f /tmp/fs.tar.gz /opt/freesurfer/license.txt

# --------------------------------------------------------------------------
# DBSegment 0.2.2 pins torch 2.3.0, antspyx 0.4.2 and nnunet 1.7.1, which clash
# with ours: it gets its own virtual environment, reached only through its
# executable.
FROM python-build AS dbsegment
ARG DBSEGMENT_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python3 -m venv /opt/dbsegment \
    && /opt/dbsegment/bin/pip install --index-url "${DBSEGMENT_TORCH_INDEX_URL}" "torch==2.3.0" \
    && /opt/dbsegment/bin/pip install "DBSegment==0.2.2"

# Its model (the 7-fold bundle that `-f 0 1 2 3 4` selects), checked by sha256;
# the app checks the folder before running and never lets DBSegment download.
FROM fetcher AS dbsegment-model
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        unzip=6.0-28+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
ARG DBSEGMENT_MODEL_URL=https://webdav-r3lab.uni.lu/public/deep_brain_seg/deep_brain_seg_model_7f.zip
ARG DBSEGMENT_MODEL_SHA256
RUN if [ -z "${DBSEGMENT_MODEL_SHA256}" ]; then \
        echo "DBSEGMENT_MODEL_SHA256 is required (sha256 of ${DBSEGMENT_MODEL_URL})" >&2; exit 1; \
    fi \
    && curl -fsSL --retry 3 -o /tmp/model.zip "${DBSEGMENT_MODEL_URL}" \
    && echo "${DBSEGMENT_MODEL_SHA256}  /tmp/model.zip" | sha256sum -c - \
    && mkdir -p /opt/dbsegment-models \
    && unzip -q /tmp/model.zip -d /opt/dbsegment-models \
    && rm -f /tmp/model.zip

# --------------------------------------------------------------------------
# full (default): core + FSL + FreeSurfer + DBSegment.
FROM core AS full
ARG VERSION=0.1.0
ARG IMAGE_NAME=thalamusbidsapp/thalamus-bidsapp
LABEL org.opencontainers.image.title="thalamus-bidsapp" \
      org.opencontainers.image.description="BIDS App benchmarking thalamus segmentation (FreeSurfer, FSL FIRST, DBSegment, MindGlide, MeshNet) in MS"
USER root
# Run-time needs of recon-all (tcsh, bc, perl) and of FSL's scripts (bc, dc).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bc=1.07.1-3+b1 \
        dc=1.07.1-3+b1 \
        libglu1-mesa=9.0.2-1.1 \
        libquadmath0=12.2.0-14+deb12u1 \
        libxmu6=2:1.1.3-3 \
        libxt6=1:1.2.1-1.1 \
        perl=5.36.0-7+deb12u4 \
        tcsh=6.24.07-1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=fsl /opt/fsl /opt/fsl
COPY --from=freesurfer /opt/freesurfer /opt/freesurfer
COPY --from=dbsegment /opt/dbsegment /opt/dbsegment
COPY --from=dbsegment-model /opt/dbsegment-models /opt/dbsegment-models
# DBSegment's executable on PATH without putting its venv's python first.
RUN ln -s /opt/dbsegment/bin/DBSegment /usr/local/bin/DBSegment
ENV FSLDIR=/opt/fsl \
    FSLOUTPUTTYPE=NIFTI_GZ \
    FSLMULTIFILEQUIT=TRUE \
    FSL_LOAD_NIFTI_EXTENSIONS=0 \
    FSL_SKIP_GLOBAL=0 \
    FREESURFER_HOME=/opt/freesurfer \
    FS_OVERRIDE=0 \
    FSF_OUTPUT_FORMAT=nii.gz \
    MNI_DIR=/opt/freesurfer/mni \
    MINC_BIN_DIR=/opt/freesurfer/mni/bin \
    MINC_LIB_DIR=/opt/freesurfer/mni/lib \
    MNI_DATAPATH=/opt/freesurfer/mni/data \
    PERL5LIB=/opt/freesurfer/mni/share/perl5 \
    SUBJECTS_DIR=/tmp/subjects \
    DBSEGMENT_MODEL_PATH=/opt/dbsegment-models/ \
    PATH=/opt/venv/bin:/opt/freesurfer/bin:/opt/freesurfer/mni/bin:/opt/fsl/share/fsl/bin:${PATH} \
    THALAMUS_CONTAINER="docker:${IMAGE_NAME}:${VERSION}"
USER 1000:1000
