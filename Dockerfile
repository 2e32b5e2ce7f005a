# thalamus_bidsapp container image (BIDS App).
#
# Targets:
#   core  - the app with antspyx, deepbet, MindGlide, MeshNet weights and the
#           MindGlide weights; no FSL, FreeSurfer or DBSegment. For places where
#           those downloads are impossible (and for the project's own CI).
#   full  - (the default, last stage) core + FSL 6.0.7 (FIRST, FLIRT) +
#           FreeSurfer 7.4.1 (trimmed) + DBSegment 0.2.2 in its own virtual
#           environment + its model.
#
# BuildKit is required (Docker >= 23 uses it by default; otherwise set
# DOCKER_BUILDKIT=1; podman/buildah work too). The legacy builder builds every
# stage, including weights-context, whose COPY of ./container-weights/ fails
# when that folder is absent.
#
# Build (full, CPU PyTorch):
#   docker build \
#     --build-arg FREESURFER_SHA256=<sha256 of the 7.4.1 tarball> \
#     --build-arg DBSEGMENT_MODEL_SHA256=<sha256 of deep_brain_seg_model_7f.zip> \
#     -t thalamusbidsapp/thalamus-bidsapp:0.1.0 .
# Core only:      docker build --target core .
# CUDA PyTorch:   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# Offline weights (no download): --build-arg WEIGHTS_SOURCE=context with the
#   files under ./container-weights/ in the build context (see weights-context).
# Reproducible Debian packages: --build-arg DEBIAN_SNAPSHOT=20250520T000000Z
#   installs them from snapshot.debian.org as of that date (see base).
#
# Checksums that are not published anywhere we could verify (the FreeSurfer
# tarball and DBSegment's model zip) are mandatory build arguments without a
# default: the build stops with a message rather than trusting whatever the
# server returns. The MindGlide checkpoint's sha256 is the one MindGlide's own
# Dockerfile pins for the same revision and file, so it has a default.
#
# Each final stage ends with `thalamus-bidsapp --check-tools installed` for its
# methods, run as the image's user: a missing executable, an unlinkable binary,
# a wrong model checksum or an unwritable cache fails the build itself.
#
# TemplateFlow: the app never queries TemplateFlow at run time. The templates
# stage fetches the files it reads (every --template: res-02 desc-brain T1w and
# atlas-HOSPA probseg, listed in the README) into /opt/templateflow, the
# image's TEMPLATEFLOW_HOME, and checks them as the app will; with
# --build-arg TEMPLATES_SOURCE=context it copies them from
# ./container-templateflow instead (builds without network to TemplateFlow).
#
# The FreeSurfer license is never baked in: pass --fs-license-file or FS_LICENSE.
#
# Licences of what the images bundle (the org.opencontainers.image.licenses
# labels, as SPDX expressions): the app Apache-2.0; antspyx, MONAI Apache-2.0;
# PyTorch BSD-3-Clause (with Apache-2.0/MIT parts); deepbet, mindglide and the
# MeshNet (brainchop) weights MIT. The full image adds FSL (its own licence,
# free for non-commercial use: https://fsl.fmrib.ox.ac.uk/fsl/docs/license.html,
# LicenseRef-FSL), FreeSurfer (its own licence, needs a free registration:
# https://surfer.nmr.mgh.harvard.edu/fswiki/FreeSurferSoftwareLicense,
# LicenseRef-FreeSurfer) and DBSegment (GPL-3.0, its wheel's LICENSE) with
# nnU-Net (Apache-2.0).

# Pinned by date tag; override with a digest-pinned reference in release CI.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-20250520-slim
ARG MICROMAMBA_IMAGE=docker.io/mambaorg/micromamba:1.5.10-bookworm-slim
# Where the model weights come from: "download" (pinned URLs + sha256) or
# "context" (files copied from ./container-weights, still sha256-checked).
ARG WEIGHTS_SOURCE=download
# Where the TemplateFlow files come from: "download" (TemplateFlow's S3, by the
# templateflow package) or "context" (./container-templateflow, checked as the app checks them).
ARG TEMPLATES_SOURCE=download
# Debian packages are not pinned by version: Debian's archive keeps only the
# newest version of each package in a suite, so a pin (above all one from
# bookworm-security: ca-certificates, perl, curl, unzip) breaks the build at
# the next update. A release build that must be reproducible names a date
# instead: every stage then installs from snapshot.debian.org as of that date.
ARG DEBIAN_SNAPSHOT=
# hadolint global ignore=DL3008

# --------------------------------------------------------------------------
# Runtime base shared by every final stage: Debian's Python 3.11 (the ABI of
# the CPU torch wheel) and the shared libraries the wheels expect.
FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_SNAPSHOT
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8
# With DEBIAN_SNAPSHOT, apt reads the archive as it was at that date (every
# later stage derives from this one, so they all do).
RUN if [ -n "${DEBIAN_SNAPSHOT}" ]; then \
        rm -f /etc/apt/sources.list; \
        printf '%s\n' \
            "Types: deb" \
            "URIs: http://snapshot.debian.org/archive/debian/${DEBIAN_SNAPSHOT}" \
            "Suites: bookworm bookworm-updates" \
            "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
            "Check-Valid-Until: no" \
            "" \
            "Types: deb" \
            "URIs: http://snapshot.debian.org/archive/debian-security/${DEBIAN_SNAPSHOT}" \
            "Suites: bookworm-security" \
            "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
            "Check-Valid-Until: no" \
            > /etc/apt/sources.list.d/debian.sources; \
    fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        libgomp1 \
        python3 \
    && rm -rf /var/lib/apt/lists/*

# --------------------------------------------------------------------------
# Build the app's virtual environment; only /opt/venv is carried forward.
FROM base AS python-build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3-venv \
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
        "matplotlib==3.11.2" "seaborn==0.13.2" "jinja2==3.1.6" "antspyx==0.6.3" \
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
        curl \
    && rm -rf /var/lib/apt/lists/*

# TemplateFlow files the app reads, fetched once at build time.
FROM python-build AS templates-download
ENV TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0
RUN /opt/venv/bin/python -c "from thalamus_bidsapp.tools.templateflow import fetch_template_files, supported_templates; [fetch_template_files(t) for t in supported_templates()]" \
    && find /opt/templateflow -type f -empty -delete

# The same files from the build context (./container-templateflow/tpl-<template>/<file>),
# for builds without network to TemplateFlow; checked as the app checks them.
FROM python-build AS templates-context
ENV TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0
COPY container-templateflow/ /opt/templateflow/
RUN /opt/venv/bin/python -c "from thalamus_bidsapp.tools.templateflow import find_template_files, supported_templates; [find_template_files(t) for t in supported_templates()]"

# hadolint ignore=DL3006
FROM templates-${TEMPLATES_SOURCE} AS templates

# Model weights, downloaded from pinned URLs and checked by sha256.
FROM fetcher AS weights-download
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# MeshNet (brainchop, MIT): the commit and checksums match
# thalamus_bidsapp/data/meshnet_models.json.
ARG MESHNET_COMMIT=4c87885f3a2a8835e260d521dcec922b58d91d41
ARG MESHNET_JSON_SHA256=d28521c0965e452c371314e4b5b4dcef7b19aa91241b17ef894ac24952139701
ARG MESHNET_BIN_SHA256=7039651d91c4cee0b7b1ddfe93fe2f5cb9b71d99f5a126fdef407e2a36bb52d4
ARG MESHNET_SIDES_JSON_SHA256=b80a9ac7dccaecc08d59a7f2285a1dce50305d317f505b437518773ab2b27446
ARG MESHNET_SIDES_BIN_SHA256=8a0aa1e2d94e5edc94c54aed900da978d2a1388bee4621cee05e473db64b84af
ARG MESHNET_SIDES_COLORMAP_SHA256=a450db760609a91a38b3ff1810a465841c39b1ff138cab005071c897ad0da069
# MindGlide (Hugging Face MS-PINPOINT/mindglide): the revision is the one
# mindglide 1.3.0 pins (HF_MODEL_REVISION in mindglide/infer.py); the sha256 is
# the one MindGlide's own Dockerfile (MS-PINPOINT/mindGlide, MODEL_SHA256) pins
# for that revision and file, also in thalamus_bidsapp/tools/mindglide.py.
ARG MINDGLIDE_REVISION=a1969821c0a4a37ae54f649a9a0c6fd1b8a48e26
ARG MINDGLIDE_FILE=_20240404_conjurer_trained_dice_7733.pt
ARG MINDGLIDE_SHA256=881e30efd9444a25ee70c01d795dd9fb21ac750a48f1ba8070fcd79fb75e76ca
WORKDIR /opt/models/meshnet/model30chan18cls
RUN base="https://raw.githubusercontent.com/neuroneural/brainchop/${MESHNET_COMMIT}/public/models/model30chan18cls" \
    && curl -fsSL --retry 3 -o model.json "${base}/model.json" \
    && curl -fsSL --retry 3 -o model.bin "${base}/model.bin" \
    && printf '%s  model.json\n%s  model.bin\n' "${MESHNET_JSON_SHA256}" "${MESHNET_BIN_SHA256}" | sha256sum -c -
# MeshNet's 104-class model (left and right thalamus), same commit.
WORKDIR /opt/models/meshnet/model21_104class
RUN base="https://raw.githubusercontent.com/neuroneural/brainchop/${MESHNET_COMMIT}/public/models/model21_104class" \
    && for f in model.json group1-shard1of1.bin colormap.json; do curl -fsSL --retry 3 -o "${f}" "${base}/${f}"; done \
    && printf '%s  model.json\n%s  group1-shard1of1.bin\n%s  colormap.json\n' \
        "${MESHNET_SIDES_JSON_SHA256}" "${MESHNET_SIDES_BIN_SHA256}" "${MESHNET_SIDES_COLORMAP_SHA256}" | sha256sum -c -
WORKDIR /opt/models/mindglide
RUN if [ -z "${MINDGLIDE_SHA256}" ]; then \
        echo "MINDGLIDE_SHA256 must not be empty (sha256 of ${MINDGLIDE_FILE} at revision ${MINDGLIDE_REVISION})" >&2; exit 1; \
    fi \
    && curl -fsSL --retry 3 -o "${MINDGLIDE_FILE}" \
        "https://huggingface.co/MS-PINPOINT/mindglide/resolve/${MINDGLIDE_REVISION}/${MINDGLIDE_FILE}" \
    && echo "${MINDGLIDE_SHA256}  ${MINDGLIDE_FILE}" | sha256sum -c -

# The same files from the build context (./container-weights/meshnet/<model>/...,
# optionally ./container-weights/mindglide/<file>), for builds without network
# to GitHub or Hugging Face. Checked against the same sums; a missing MindGlide
# file leaves the method unavailable (the app then skips it with a reason).
FROM base AS weights-context
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG MESHNET_JSON_SHA256=d28521c0965e452c371314e4b5b4dcef7b19aa91241b17ef894ac24952139701
ARG MESHNET_BIN_SHA256=7039651d91c4cee0b7b1ddfe93fe2f5cb9b71d99f5a126fdef407e2a36bb52d4
ARG MESHNET_SIDES_JSON_SHA256=b80a9ac7dccaecc08d59a7f2285a1dce50305d317f505b437518773ab2b27446
ARG MESHNET_SIDES_BIN_SHA256=8a0aa1e2d94e5edc94c54aed900da978d2a1388bee4621cee05e473db64b84af
ARG MESHNET_SIDES_COLORMAP_SHA256=a450db760609a91a38b3ff1810a465841c39b1ff138cab005071c897ad0da069
ARG MINDGLIDE_FILE=_20240404_conjurer_trained_dice_7733.pt
ARG MINDGLIDE_SHA256=881e30efd9444a25ee70c01d795dd9fb21ac750a48f1ba8070fcd79fb75e76ca
COPY container-weights/ /opt/models/
WORKDIR /opt/models/meshnet/model30chan18cls
RUN printf '%s  model.json\n%s  model.bin\n' "${MESHNET_JSON_SHA256}" "${MESHNET_BIN_SHA256}" | sha256sum -c - \
    && sides=/opt/models/meshnet/model21_104class \
    && printf '%s  %s\n' "${MESHNET_SIDES_JSON_SHA256}" "${sides}/model.json" \
        "${MESHNET_SIDES_BIN_SHA256}" "${sides}/group1-shard1of1.bin" \
        "${MESHNET_SIDES_COLORMAP_SHA256}" "${sides}/colormap.json" | sha256sum -c - \
    && mkdir -p /opt/models/mindglide \
    && if [ -f "/opt/models/mindglide/${MINDGLIDE_FILE}" ]; then \
        if [ -z "${MINDGLIDE_SHA256}" ]; then echo "MINDGLIDE_SHA256 must not be empty with a MindGlide file" >&2; exit 1; fi; \
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
      org.opencontainers.image.licenses="Apache-2.0 AND MIT AND BSD-3-Clause"
COPY --from=python-build /opt/venv /opt/venv
COPY --from=weights /opt/models /opt/models
COPY --from=templates /opt/templateflow /opt/templateflow
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
    THALAMUS_MESHNET_SIDES_MODEL=/opt/models/meshnet/model21_104class \
    MODEL_PATH=/opt/models/mindglide/_20240404_conjurer_trained_dice_7733.pt \
    HF_HUB_OFFLINE=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    NIPYPE_NO_ET=1 \
    MPLBACKEND=Agg \
    MKL_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    THALAMUS_CONTAINER="docker:${IMAGE_NAME}:${VERSION}-core"
WORKDIR /tmp
USER 1000:1000
# The image checks itself as its user: MeshNet, and MindGlide when its weights
# are in (a context build may leave them out on purpose), must be able to run.
RUN if [ -f "${MODEL_PATH}" ]; then \
        thalamus-bidsapp --check-tools installed --methods meshnet mindglide; \
    else \
        thalamus-bidsapp --check-tools installed --methods meshnet; \
    fi
ENTRYPOINT ["thalamus-bidsapp"]
CMD ["--help"]

# --------------------------------------------------------------------------
# FSL 6.0.7 from FSL's conda channel, trimmed to what the app calls: FIRST
# (run_first_all and the programs and data it uses) and FLIRT (registration).
# Every FSL package is pinned to its version in that one release's environment
# file (fsl-6.0.7_linux-64.yml, fsldownloads/fslconda/releases), and so are the
# libraries FIRST and FLIRT link against, so the solver cannot mix releases.
# run_first_all runs each step through ${FSLDIR}/bin/fsl_sub (without it, it
# exits 0 having done nothing) and calls imtest, remove_ext and imrm, which
# fslpy provides: both are listed explicitly. Left out because no step uses
# them: SIENA, BET, FAST, the 317-subject FIRST models, the Tcl GUIs.
# Conda checks each package against the sha256 in the channel's repodata.
FROM ${MICROMAMBA_IMAGE} AS fsl
# Writing /opt needs root in this throw-away stage; only /opt/fsl is copied on.
# hadolint ignore=DL3002
USER root
ARG FSL_VERSION=6.0.7
# FSL's post-link scripts create the wrappers in $FSLDIR/share/fsl/bin only
# when these are set during the install.
ENV FSLDIR=/opt/fsl \
    FSL_CREATE_WRAPPER_SCRIPTS=1
RUN micromamba create -y -p /opt/fsl \
        -c https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/public/ -c conda-forge \
        "python=3.11" "numpy=1.24" "nibabel=5" "libopenblas=0.3.21=*openmp*" \
        "fsl-base==2306.1" \
        "fsl-first==2203.0" "fsl-first_lib==2111.0" "fsl-shapemodel==2111.0" \
        "fsl-flirt==2111.2" "fsl-avwutils==2209.0" "fsl-misc_scripts==2111.0" \
        "fsl-newimage==2203.9" "fsl-miscmaths==2203.2" "fsl-newnifti==4.1.0" \
        "fsl-meshclass==2111.0" "fsl-vtkio==2111.0" "fsl-cprob==2111.0" \
        "fsl-znzlib==2111.0" "fsl-utils==2203.2" "fsl-armawrap==0.6.0" \
        "fsl_sub==2.8.3" "fslpy==3.13.2" \
        "fsl-data_first_models_336_bin==2006.0" "fsl-data_standard==2208.0" \
    && micromamba clean -y --all \
    && rm -rf /opt/fsl/pkgs /opt/fsl/include /opt/fsl/share/doc \
    && mkdir -p /opt/fsl/etc \
    && echo "${FSL_VERSION}" > /opt/fsl/etc/fslversion \
    && test -x /opt/fsl/bin/fsl_sub && test -x /opt/fsl/bin/imtest \
    && test -n "$(ls -A /opt/fsl/share/fsl/bin)"

# --------------------------------------------------------------------------
# FreeSurfer 7.4.1 (the Ubuntu 22.04 build, as FastSurfer installs it), trimmed
# as fMRIPrep does: what recon-all -all needs stays (fsaverage for the surface
# registration), atlases for other tools go.
FROM fetcher AS freesurfer
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG FREESURFER_VERSION=7.4.1
ARG FREESURFER_SHA256
RUN if [ -z "${FREESURFER_SHA256}" ]; then \
        echo "FREESURFER_SHA256 is required (sha256 of freesurfer-linux-ubuntu22_amd64-${FREESURFER_VERSION}.tar.gz)" >&2; exit 1; \
    fi \
    && curl -fsSL --retry 3 -o /tmp/fs.tar.gz \
        "https://surfer.nmr.mgh.harvard.edu/pub/dist/freesurfer/${FREESURFER_VERSION}/freesurfer-linux-ubuntu22_amd64-${FREESURFER_VERSION}.tar.gz" \
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
# DBSegment points nnU-Net's folders into the bundle (nnUNet_raw_data_base =
# the bundle, nnUNet_preprocessed = <bundle>/preprocess_nnUNet, RESULTS_FOLDER
# = <bundle>/model), overriding any value in the environment, and nnunet 1.7.1
# creates nnUNet_raw_data, nnUNet_cropped_data, preprocess_nnUNet and
# model/nnUNet there on import. The folder is root-owned (read-only in a .sif),
# so they are created here; existing folders need no write access.
FROM fetcher AS dbsegment-model
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        unzip \
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
    && rm -f /tmp/model.zip \
    && mkdir -p /opt/dbsegment-models/deep_brain_seg_model_7f/nnUNet_raw_data \
        /opt/dbsegment-models/deep_brain_seg_model_7f/nnUNet_cropped_data \
        /opt/dbsegment-models/deep_brain_seg_model_7f/preprocess_nnUNet \
        /opt/dbsegment-models/deep_brain_seg_model_7f/model/nnUNet \
    && chmod -R a+rX /opt/dbsegment-models

# --------------------------------------------------------------------------
# full (default): core + FSL + FreeSurfer + DBSegment.
FROM core AS full
ARG VERSION=0.1.0
ARG IMAGE_NAME=thalamusbidsapp/thalamus-bidsapp
LABEL org.opencontainers.image.title="thalamus-bidsapp" \
      org.opencontainers.image.description="BIDS App benchmarking thalamus segmentation (FreeSurfer, FSL FIRST, DBSegment, MindGlide, MeshNet) in MS" \
      org.opencontainers.image.licenses="Apache-2.0 AND MIT AND BSD-3-Clause AND GPL-3.0-only AND LicenseRef-FSL AND LicenseRef-FreeSurfer"
USER root
# Run-time needs of recon-all (tcsh, bc, perl; procps for `uptime`, which
# FreeSurfer 7.4.1's fs_time calls and aborts without, "upt: Subscript out of
# range") and the libraries FreeSurfer's binaries link against (libgfortran5,
# libquadmath0, libgomp1 from base, the X libraries), as in the FreeSurfer
# 7.4.1 image of pwighton/fs-docker; FSL's scripts need bc and dc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bc \
        dc \
        libgfortran5 \
        libglu1-mesa \
        libquadmath0 \
        libsm6 \
        libxext6 \
        libxmu6 \
        libxrender1 \
        libxt6 \
        perl \
        procps \
        tcsh \
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
    OS=Linux \
    FREESURFER_HOME=/opt/freesurfer \
    FREESURFER=/opt/freesurfer \
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
# Every method must be able to run (the FreeSurfer licence, a run-time input,
# is reported but not required here): executables, versions, linkage of the
# FreeSurfer and FSL binaries, FIRST's models and templates, DBSegment's model
# and nnU-Net folders, model checksums and writable caches.
RUN thalamus-bidsapp --check-tools installed --methods freesurfer first dbsegment meshnet mindglide
