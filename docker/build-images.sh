#!/usr/bin/env bash
# docker/build-images.sh VERSION SERVICE...: `make images`. Builds facenas/<service>:VERSION from
# docker/Dockerfile (--target <service>) for each SERVICE, with the base image and torch index that
# docker/prepare-local.sh picks (the public ones where they answer, local stand-ins elsewhere); while it
# builds it serves the local torch index, if any, on 127.0.0.1. PYTHON_IMAGE, BUILDER_IMAGE and
# TORCH_INDEX_URL in the environment override the choice; DOCKER_BUILDKIT (default 0: the classic
# builder, which needs no buildx plugin and pulls no frontend image) and DOCKER_BUILD_FLAGS pass on.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: docker/build-images.sh VERSION SERVICE..." >&2; exit 2; }
version=$1
shift

if ! command -v docker >/dev/null 2>&1; then
    echo "images: no docker command (the engine is needed: make docker-engine installs and starts it as root)" >&2
    exit 1
fi
if ! error=$(docker info 2>&1 >/dev/null); then
    echo "images: the docker engine does not answer: $(echo "$error" | tail -n 1)" >&2
    echo "images: make docker-engine starts it (installing docker.io where it can)" >&2
    exit 1
fi

started=$(date +%s)
choice=$(docker/prepare-local.sh)
PYTHON_IMAGE="" BUILDER_IMAGE="" TORCH_INDEX_URL="" WHEEL_DIR="" NETWORK=""
while IFS='=' read -r key value; do
    case $key in
    PYTHON_IMAGE | BUILDER_IMAGE | TORCH_INDEX_URL | WHEEL_DIR | NETWORK) printf -v "$key" '%s' "$value" ;;
    esac
done <<<"$choice"
prepared=$(date +%s)

server=""
stop_server() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ -n "$WHEEL_DIR" ]; then
    port=${TORCH_INDEX_URL##*:}
    port=${port%%/*}
    "${PYTHON:-python3}" -m http.server --bind 127.0.0.1 --directory "$WHEEL_DIR" "$port" \
        >"$WHEEL_DIR/server.log" 2>&1 &
    server=$!
    for _ in $(seq 50); do
        if "${PYTHON:-python3}" -c 'import sys, urllib.request
sys.exit(b"torch-" not in urllib.request.urlopen(sys.argv[1], timeout=2).read())' "$TORCH_INDEX_URL/torch/" 2>/dev/null; then
            break
        fi
        kill -0 "$server" 2>/dev/null || { echo "images: the wheel server did not start (port $port busy? WHEEL_PORT=... picks another):" >&2; cat "$WHEEL_DIR/server.log" >&2; exit 1; }
        sleep 0.2
    done
fi

args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "BUILDER_IMAGE=$BUILDER_IMAGE"
    --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[ -z "$NETWORK" ] || args+=(--network "$NETWORK")
# shellcheck disable=SC2206 # DOCKER_BUILD_FLAGS is a list of words
args+=(${DOCKER_BUILD_FLAGS:-})
echo "images: PYTHON_IMAGE=$PYTHON_IMAGE BUILDER_IMAGE=$BUILDER_IMAGE TORCH_INDEX_URL=$TORCH_INDEX_URL${NETWORK:+ (network $NETWORK)}"
times=()
for service in "$@"; do
    echo "images: docker build -f docker/Dockerfile --target $service -t facenas/$service:$version ${args[*]} ."
    t0=$(date +%s)
    DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -f docker/Dockerfile --target "$service" \
        -t "facenas/$service:$version" "${args[@]}" .
    times+=("$service $(($(date +%s) - t0)) s")
done
echo "images: built in $(($(date +%s) - started)) s (choosing the base and index: $((prepared - started)) s; ${times[*]/%/;})"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^facenas/($(IFS='|'; echo "$*")):$version\b" || true
