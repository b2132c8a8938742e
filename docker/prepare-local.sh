#!/usr/bin/env bash
# docker/prepare-local.sh: which base image and torch index `make images` builds with, preparing local
# stand-ins for the public ones where they cannot be reached. Prints the choice on stdout as KEY=value
# lines (PYTHON_IMAGE, BUILDER_IMAGE, TORCH_INDEX_URL, WHEEL_DIR, NETWORK); what it does goes to stderr.
#
#   PYTHON_IMAGE     given (non-empty): used as is. Else docker/Dockerfile's default
#                    (python:3.11.13-slim-bookworm) when the engine has it or its registry answers
#                    (`docker manifest inspect`, PROBE_TIMEOUT seconds); else the local base
#                    facenas/python:3.11-bookworm, made once from Debian's packages (mmdebstrap, minbase
#                    bookworm + python3, python3-venv, python3-pip, python-is-python3: Python 3.11 at
#                    /usr/bin) and reused (REBUILD_BASE=1 makes it again).
#   BUILDER_IMAGE    given: used as is. Else the base, or, with the local base and CA certificates
#                    added on this host (/usr/local/share/ca-certificates/*.crt: a proxy the build's
#                    pip must trust), facenas/python:3.11-bookworm-build: the base trusting them. It is
#                    only ever a builder: docker/Dockerfile's shipped stages start FROM PYTHON_IMAGE.
#   TORCH_INDEX_URL  given: used as is. Else docker/Dockerfile's default (PyTorch's CPU index) when it
#                    answers; else a local index: the CPU wheel torch==TORCH_VERSION+cpu fetched by this
#                    host's pip into WHEEL_DIR (IMAGE_CACHE/wheels, reused), which docker/build-images.sh
#                    serves on http://127.0.0.1:WHEEL_PORT/ during the build (NETWORK=host).
# Environment: PROBE_TIMEOUT (10), IMAGE_CACHE (~/.cache/facenas-images), WHEEL_PORT (38471), PYTHON
# (python3: the host pip that fetches the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "prepare-local: $*" >&2; }
die() { say "$*"; exit 1; }
default() { sed -n "s/^ARG $1=//p" docker/Dockerfile | head -n 1; }

PROBE_TIMEOUT=${PROBE_TIMEOUT:-10}
IMAGE_CACHE=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/facenas-images}
WHEEL_PORT=${WHEEL_PORT:-38471}
TORCH_VERSION=${TORCH_VERSION:-$(default TORCH_VERSION)}
LOCAL_BASE=facenas/python:3.11-bookworm
LOCAL_BUILDER=facenas/python:3.11-bookworm-build
HOST_CAS=/usr/local/share/ca-certificates
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

docker info >/dev/null 2>&1 || die "the docker engine does not answer (make docker-engine starts it)"

# ---- the base image ----
base=${PYTHON_IMAGE:-}
builder=${BUILDER_IMAGE:-}
if [ -z "$base" ]; then
    public=$(default PYTHON_IMAGE)
    if docker image inspect "$public" >/dev/null 2>&1 \
        || timeout "$PROBE_TIMEOUT" docker manifest inspect "$public" >/dev/null 2>&1; then
        base=$public
    else
        say "$public cannot be pulled: using the local base $LOCAL_BASE"
        base=$LOCAL_BASE
    fi
fi

if [ "$base" = "$LOCAL_BASE" ]; then
    if [ "${REBUILD_BASE:-0}" = 1 ] || ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        if ! command -v mmdebstrap >/dev/null 2>&1; then
            if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
                say "installing mmdebstrap (apt-get)"
                apt-get update -q >&2
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >&2
            else
                die "the local base needs mmdebstrap (Debian's package; as root: apt-get install mmdebstrap)"
            fi
        fi
        say "making $LOCAL_BASE from Debian $SUITE (mmdebstrap, about a minute)"
        started=$(date +%s)
        # minbase (Essential and Priority: required, passwd's useradd included) plus Python. The
        # merged-usr hook instead of the usrmerge package (which would pull perl); no recommends; no
        # man pages, docs (copyright files stay) or translations. mmdebstrap empties apt's lists.
        mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
            --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
            --aptopt='APT::Install-Recommends "false"' \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            "$SUITE" - \
            "deb $MIRROR $SUITE main" \
            "deb $MIRROR $SUITE-updates main" \
            "deb $SECURITY_MIRROR $SUITE-security main" \
            | docker import \
                --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change 'ENV LANG=C.UTF-8' \
                --change 'CMD ["python3"]' \
                - "$LOCAL_BASE" >/dev/null
        docker run --rm "$LOCAL_BASE" sh -c 'python --version && python -m venv /tmp/v && command -v useradd' >&2 \
            || die "$LOCAL_BASE lacks Python 3.11, venv or useradd"
        say "$LOCAL_BASE made in $(($(date +%s) - started)) s"
    else
        say "reusing $LOCAL_BASE ($(docker image inspect -f '{{.Created}}' "$LOCAL_BASE"); REBUILD_BASE=1 makes it again)"
    fi
    if [ -z "$builder" ]; then
        builder=$base
        shopt -s nullglob
        cas=("$HOST_CAS"/*.crt)
        if [ ${#cas[@]} -gt 0 ]; then
            # A build-only image: the base plus this host's CAs (the classic builder caches it, so
            # this takes a second once made, and remakes it when a certificate or the base changes).
            context=$(mktemp -d)
            cp "${cas[@]}" "$context/"
            cat >"$context/Dockerfile" <<EOF
FROM $base
COPY *.crt /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.description="facenas build-only image: trusts this host's CAs; never ship it"
EOF
            DOCKER_BUILDKIT=0 docker build -q -t "$LOCAL_BUILDER" "$context" >/dev/null \
                || { rm -rf "$context"; die "could not build $LOCAL_BUILDER"; }
            rm -rf "$context"
            say "builder stages use $LOCAL_BUILDER (trusts ${#cas[@]} CA certificate(s) from $HOST_CAS)"
            builder=$LOCAL_BUILDER
        fi
    fi
fi
builder=${builder:-$base}
network=""
# The local base stands in where the public registry is unreachable: build on the host's network, the
# one known to reach PyPI (and 127.0.0.1, where the local torch index is served).
[ "$base" != "$LOCAL_BASE" ] || network=host

# ---- the torch index ----
index=${TORCH_INDEX_URL:-}
wheels=""
probe_url() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m "$PROBE_TIMEOUT" -o /dev/null "$1" 2>/dev/null
    else
        "${PYTHON:-python3}" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))' \
            "$1" "$PROBE_TIMEOUT" 2>/dev/null
    fi
}
if [ -z "$index" ]; then
    public=$(default TORCH_INDEX_URL)
    if probe_url "$public/torch/"; then
        index=$public
    else
        wheels=$IMAGE_CACHE/wheels
        say "$public does not answer: serving torch==$TORCH_VERSION (CPU) from $wheels"
        mkdir -p "$wheels/torch"
        if ! compgen -G "$wheels/torch/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
            # +cpu: the CPU build by name (a plain torch==X from PyPI is the CUDA build). The host's
            # pip looks where it is configured to (here: its find-links, then PyPI).
            "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
                -d "$wheels/torch" "torch==$TORCH_VERSION+cpu" >&2 \
                || die "the host's pip cannot fetch torch==$TORCH_VERSION+cpu (give TORCH_INDEX_URL=... a reachable index)"
        fi
        index=http://127.0.0.1:$WHEEL_PORT
        network=host
    fi
fi

echo "PYTHON_IMAGE=$base"
echo "BUILDER_IMAGE=$builder"
echo "TORCH_INDEX_URL=$index"
echo "WHEEL_DIR=$wheels"
echo "NETWORK=$network"
