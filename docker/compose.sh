#!/usr/bin/env bash
# docker/compose.sh up|down|status (`make up`, `make down`): the whole system as containers
# on this host, with plain `docker run` on a user-defined network (no compose plugin needed):
#
#   data          one-shot (trainer image, `facenas data synth` then `facenas data prepare`): writes the
#                 synthetic dataset and its data cache into the dataset volume, as the dataset-prepare Job
#                 of deploy/k8s/overlays/local does; skips the frames when they are there already
#   store         SQLite on the store volume; STORE=postgres: PostgreSQL on this host (PG_URL), see below
#   trainer-1..N  TRAINERS (2), sharing the name trainer-headless (the searcher's dns:/// replicas)
#   latency-cpu, latency-snp (the int8 emulation backend)
#   searcher      its gRPC port published on 127.0.0.1:SEARCHER_PORT for the facenas CLI
#   Prometheus    this host's `prometheus` (Debian's package) scraping every container's /metrics through
#                 ports published on 127.0.0.1 (METRICS_PORT and up), with deploy/prometheus/alerts.yaml
#
# Every container runs as the pods do: the image's user (10001), read-only root filesystem, /tmp a tmpfs,
# no capabilities, no privilege escalation, the Deployment's env (docker/system/<image>.env after
# common.env: the facenas-config ConfigMap), no other port published. `up` waits until every service
# answers its readiness health check (the probe of deploy/k8s) and prints how to use it:
#
#   facenas search start facenas/configs/demo_search.yaml --searcher 127.0.0.1:50051 --watch
#
# Settings (environment):
#   VERSION (0.1.0)        image tag: facenas/<name>:VERSION (`make images`)
#   PREFIX (facenas)       names of the network, containers (PREFIX-store...) and volumes (PREFIX-store,
#                          PREFIX-dataset, PREFIX-run); containers carry the label io.facenas.system=PREFIX
#   SEARCHER_PORT (50051)  the searcher's gRPC port on 127.0.0.1
#   METRICS_PORT (19090)   /metrics on 127.0.0.1: store +0, searcher +1, latency-cpu +2, latency-snp +3,
#                          trainer-N +3+N (empty: none published, no Prometheus)
#   PROMETHEUS (auto)      auto: start it when `prometheus` is installed; 1: it must be; 0: never.
#   PROMETHEUS_PORT (19089), SCRAPE_INTERVAL (15s)
#   STORE (sqlite)         postgres: the store on PostgreSQL at PG_URL (postgresql://postgres@127.0.0.1:
#                          5432/test), no store volume (components/postgres). PostgreSQL on this host
#                          listens on its loopback, out of the containers' reach: PREFIX-postgres-relay
#                          (docker/pg-relay.py on the host's network) forwards the system network's
#                          gateway address, port PG_RELAY_PORT (15432), to it
#   TRAINERS (2), FRAMES (200), FRAME_SIZE (256), IMG_SIZE (64x64: the data cache, demo_search's size)
#   ENV_DIR (docker/system) the env files: common.env, then <image>.env per image; <image>.args there, if
#                          any, holds more `docker run` arguments, one per line (tests/images uses both)
#   STATE_DIR              Prometheus' configuration, data, log and pid file
#                          (${XDG_STATE_HOME:-~/.local/state}/facenas/PREFIX)
#   READY_TIMEOUT (180)    seconds to wait for every service
#
# `down` removes the containers and the network and stops that Prometheus; the volumes stay (the store's
# database and the dataset survive, like the cluster's PersistentVolumeClaims): `down --volumes` drops them
# and Prometheus' data.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VERSION=${VERSION:-0.1.0}
PREFIX=${PREFIX:-facenas}
SEARCHER_PORT=${SEARCHER_PORT:-50051}
METRICS_PORT=${METRICS_PORT-19090}
PROMETHEUS=${PROMETHEUS:-auto}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-19089}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-15s}
STORE=${STORE:-sqlite}
PG_URL=${PG_URL:-postgresql://postgres@127.0.0.1:5432/test}
PG_RELAY_PORT=${PG_RELAY_PORT:-15432}
TRAINERS=${TRAINERS:-2}
FRAMES=${FRAMES:-200}
FRAME_SIZE=${FRAME_SIZE:-256}
IMG_SIZE=${IMG_SIZE:-64x64}
ENV_DIR=${ENV_DIR:-$ROOT/docker/system}
STATE_DIR=${STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/facenas/$PREFIX}
READY_TIMEOUT=${READY_TIMEOUT:-180}
LABEL=io.facenas.system=$PREFIX
NETWORK=$PREFIX
DOMAIN=facenas.svc.cluster.local # the Kubernetes Services' names, as network aliases
UID_GID=10001:10001

say() { echo "compose: $*" >&2; }
die() {
    say "$*"
    exit 1
}

require_engine() {
    command -v docker >/dev/null 2>&1 || die "no docker command (make docker-engine installs and starts the engine)"
    local error
    if ! error=$(docker info 2>&1 >/dev/null); then
        die "the docker engine does not answer: $(echo "$error" | tail -n 1) (make docker-engine starts it)"
    fi
}

# env_value IMAGE NAME: NAME's value for IMAGE's containers (its .env file over common.env), "" if unset
env_value() {
    local file value result=""
    for file in "$ENV_DIR/common.env" "$ENV_DIR/$1.env"; do
        [ -f "$file" ] || continue
        value=$(sed -n "s/^$2=//p" "$file" | tail -n 1)
        [ -z "$value" ] || result=$value
    done
    echo "$result"
}

# the docker run arguments every service container gets (the pods' securityContext, its env files)
pod_args() { # IMAGE
    local image=$1 file
    args=(--detach --label "$LABEL" --label "io.facenas.image=$image"
        --user "$UID_GID" --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges
        --restart unless-stopped --stop-timeout 45)
    for file in "$ENV_DIR/common.env" "$ENV_DIR/$image.env"; do
        [ ! -f "$file" ] || args+=(--env-file "$file")
    done
    if [ -f "$ENV_DIR/$image.args" ]; then
        while IFS= read -r line; do
            case $line in '' | '#'*) ;; *) args+=("$line") ;; esac
        done <"$ENV_DIR/$image.args"
    fi
}

# on the system network under NAME, its Kubernetes Service names, and ALIASES
network_args() { # NAME ALIAS...
    local alias
    args+=(--network "$NETWORK" --network-alias "$1")
    for alias in "$@"; do args+=(--network-alias "$alias.$DOMAIN"); done
    shift
    for alias in "$@"; do args+=(--network-alias "$alias"); done
}

metrics_port() { # INDEX: the published /metrics port of the INDEXth service
    [ -n "$METRICS_PORT" ] && echo $((METRICS_PORT + $1))
}

publish_metrics() { # IMAGE INDEX
    local port
    port=$(metrics_port "$2") || return 0
    args+=(--publish "127.0.0.1:$port:$(env_value "$1" FACENAS_METRICS_PORT)")
}

gateway() {
    docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$NETWORK"
}

# the services `up` starts: container name, image, index of its metrics port
# (in start order: the searcher last, when the names of every replica resolve)
services() {
    echo "store store 0"
    echo "latency-cpu latency_cpu 2"
    echo "latency-snp latency_snp 3"
    local i
    for i in $(seq "$TRAINERS"); do echo "trainer-$i trainer $((3 + i))"; done
    echo "searcher searcher 1"
}

readiness_service() { # IMAGE: the gRPC service the Deployment's readinessProbe asks for
    case $1 in
    store) echo facenas.v1.Store ;;
    searcher) echo facenas.v1.Searcher ;;
    *) echo facenas.v1.Evaluator ;;
    esac
}

# wait_ready NAME IMAGE: until the readiness health check answers SERVING inside the container
wait_ready() {
    local name=$1 image=$2 status="" deadline=$((SECONDS + READY_TIMEOUT))
    local port
    port=$(env_value "$image" FACENAS_PORT)
    while [ $SECONDS -lt $deadline ]; do
        status=$(docker exec "$PREFIX-$name" python -m facenas.rpc.healthcheck --port "$port" \
            --service "$(readiness_service "$image")" 2>&1 | tail -n 1) || true
        [ "$status" != SERVING ] || return 0
        if [ "$(docker inspect -f '{{.State.Running}}' "$PREFIX-$name" 2>/dev/null)" != true ]; then
            say "$PREFIX-$name exited; its log:"
            docker logs --tail 20 "$PREFIX-$name" >&2 2>&1 || true
            return 1
        fi
        sleep 1
    done
    say "$PREFIX-$name not ready after $READY_TIMEOUT s: ${status:-no answer}; its log:"
    docker logs --tail 20 "$PREFIX-$name" >&2 2>&1 || true
    return 1
}

remove_containers() {
    docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null
}

stop_prometheus() {
    local pid
    pid=$(cat "$STATE_DIR/prometheus.pid" 2>/dev/null) || return 0
    # only the Prometheus `up` started (a pid may have been reused since)
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--config.file=$STATE_DIR/prometheus.yml"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/prometheus.pid"
}

start_prometheus() { # TARGET... ("job=host:port")
    if [ "$PROMETHEUS" = 0 ] || [ -z "$METRICS_PORT" ]; then return 0; fi
    if ! command -v prometheus >/dev/null 2>&1; then
        [ "$PROMETHEUS" != 1 ] || die "PROMETHEUS=1 but prometheus is not installed (apt-get install prometheus)"
        say "prometheus is not installed (apt-get install prometheus): no scraping"
        return 0
    fi
    mkdir -p "$STATE_DIR"
    local config=$STATE_DIR/prometheus.yml target job
    {
        echo "# written by docker/compose.sh up ($PREFIX)"
        echo "global: {scrape_interval: $SCRAPE_INTERVAL, evaluation_interval: $SCRAPE_INTERVAL}"
        echo "rule_files: ['$ROOT/deploy/prometheus/alerts.yaml']"
        echo "scrape_configs:"
        for job in $(printf '%s\n' "$@" | cut -d= -f1 | sort -u); do
            echo "  - job_name: facenas-$job"
            echo "    static_configs:"
            echo "      - targets:"
            for target in "$@"; do
                [ "${target%%=*}" != "$job" ] || echo "          - '${target#*=}'"
            done
        done
    } >"$config"
    stop_prometheus
    setsid nohup prometheus "--config.file=$config" "--storage.tsdb.path=$STATE_DIR/tsdb" \
        "--web.listen-address=127.0.0.1:$PROMETHEUS_PORT" >"$STATE_DIR/prometheus.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/prometheus.pid"
    for _ in $(seq 100); do
        if "${PYTHON:-python3}" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
            "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 2>/dev/null; then
            say "prometheus on http://127.0.0.1:$PROMETHEUS_PORT (log: $STATE_DIR/prometheus.log)"
            return 0
        fi
        kill -0 "$(cat "$STATE_DIR/prometheus.pid")" 2>/dev/null || break
        sleep 0.2
    done
    tail -n 20 "$STATE_DIR/prometheus.log" >&2 || true
    die "prometheus did not start"
}

up() {
    require_engine
    case $STORE in sqlite | postgres) ;; *) die "STORE=$STORE: sqlite or postgres" ;; esac
    local name image index port started=$SECONDS
    for image in store searcher trainer latency_cpu latency_snp; do
        docker image inspect "facenas/$image:$VERSION" >/dev/null 2>&1 \
            || die "no image facenas/$image:$VERSION (make images builds them)"
    done
    remove_containers
    docker network inspect "$NETWORK" >/dev/null 2>&1 || docker network create --label "$LABEL" "$NETWORK" >/dev/null
    local volume
    for volume in store dataset run; do docker volume create --label "$LABEL" "$PREFIX-$volume" >/dev/null; done

    # The dataset and the run volume (the host-wide quiet gate's lock files: CPU latency is never measured
    # while a trainer steps, as in a local run) belong to the services' user, as fsGroup makes them in a pod.
    docker run --rm --user 0 --entrypoint chown -v "$PREFIX-dataset:/data/faces:nocopy" -v "$PREFIX-run:/run/facenas:nocopy" \
        "facenas/trainer:$VERSION" "$UID_GID" /data/faces /run/facenas
    say "data: $FRAMES synthetic frames (${FRAME_SIZE}px) and the $IMG_SIZE data cache in volume $PREFIX-dataset"
    local last
    last=$(printf '%06d_seg.png' $((FRAMES - 1)))
    docker run --rm --name "$PREFIX-data" --label "$LABEL" --user "$UID_GID" --read-only --tmpfs /tmp \
        --cap-drop ALL --security-opt no-new-privileges -v "$PREFIX-dataset:/data/faces:nocopy" \
        --entrypoint sh "facenas/trainer:$VERSION" -c "
            if [ -e /data/faces/$last ]; then echo '/data/faces: $FRAMES frames already there';
            else facenas data synth --out /data/faces --count $FRAMES --size $FRAME_SIZE --seed 0; fi &&
            facenas data prepare --dataset-dir /data/faces --img-size $IMG_SIZE --workers 2" >&2

    local targets=()
    pod_args store
    network_args store
    if [ "$STORE" = postgres ]; then
        # PostgreSQL listens on this host's loopback: a relay on the host's network, bound to the system
        # network's gateway address only, forwards the store's connections to it
        local target gw url
        target=$(echo "$PG_URL" | sed -E 's#^[^:]+://([^@/]*@)?([^/?]+).*#\2#')
        [[ $target == *:* ]] || target=$target:5432
        gw=$(gateway)
        url=$(echo "$PG_URL" | sed -E "s#^([^:]+://([^@/]*@)?)[^/?]+#\1$gw:$PG_RELAY_PORT#")
        docker run --detach --label "$LABEL" --label io.facenas.image=postgres-relay --name "$PREFIX-postgres-relay" \
            --network host --user "$UID_GID" --read-only --cap-drop ALL --security-opt no-new-privileges \
            --restart unless-stopped -v "$ROOT/docker/pg-relay.py:/pg-relay.py:ro" --entrypoint python \
            "facenas/store:$VERSION" /pg-relay.py "$gw" "$PG_RELAY_PORT" "${target%:*}" "${target##*:}" >/dev/null
        say "store: PostgreSQL at $target (through $PREFIX-postgres-relay on $gw:$PG_RELAY_PORT)"
        args+=(-e "FACENAS_STORE_URL=$url")
    else
        args+=(-v "$PREFIX-store:/var/lib/facenas/store")
    fi
    publish_metrics store 0
    docker run "${args[@]}" --name "$PREFIX-store" "facenas/store:$VERSION" >/dev/null
    wait_ready store store

    while read -r name image index; do
        [ "$image" != store ] || continue
        pod_args "$image"
        case $image in
        searcher)
            network_args searcher
            args+=(--publish "127.0.0.1:$SEARCHER_PORT:$(env_value searcher FACENAS_PORT)")
            ;;
        trainer)
            network_args "$name" trainer trainer-headless
            args+=(-v "$PREFIX-dataset:/data/faces:ro,nocopy" -v "$PREFIX-run:/run/facenas:nocopy"
                -e FACENAS_QUIET_LOCK=/run/facenas/quiet.lock --tmpfs /var/lib/facenas/trainer-output:mode=1777)
            ;;
        latency_cpu)
            network_args "$name"
            args+=(-v "$PREFIX-run:/run/facenas:nocopy" -e FACENAS_QUIET_LOCK=/run/facenas/quiet.lock)
            ;;
        latency_snp)
            network_args "$name"
            args+=(-v "$PREFIX-dataset:/data/faces:ro,nocopy" -v "$PREFIX-run:/run/facenas:nocopy"
                -e FACENAS_QUIET_LOCK=/run/facenas/quiet.lock)
            ;;
        esac
        publish_metrics "$image" "$index"
        if port=$(metrics_port "$index"); then targets+=("$image=127.0.0.1:$port"); fi
        docker run "${args[@]}" --name "$PREFIX-$name" "facenas/$image:$VERSION" >/dev/null
    done < <(services)
    if [ -n "$METRICS_PORT" ]; then targets+=("store=127.0.0.1:$(metrics_port 0)"); fi

    local failed=()
    while read -r name image index; do
        [ "$image" = store ] || wait_ready "$name" "$image" || failed+=("$name")
    done < <(services)
    [ ${#failed[@]} -eq 0 ] || die "not ready: ${failed[*]} (docker/compose.sh down removes everything)"
    [ ${#targets[@]} -eq 0 ] || start_prometheus "${targets[@]}"
    say "up in $((SECONDS - started)) s: $(docker ps --filter "label=$LABEL" --format '{{.Names}}' | sort | tr '\n' ' ')"
    say "searcher on 127.0.0.1:$SEARCHER_PORT, e.g. .venv/bin/facenas search start facenas/configs/demo_search.yaml --searcher 127.0.0.1:$SEARCHER_PORT --watch"
}

down() {
    require_engine
    stop_prometheus
    remove_containers
    docker network rm "$NETWORK" >/dev/null 2>&1 || true
    if [ "${1:-}" = --volumes ]; then
        docker volume rm -f "$PREFIX-store" "$PREFIX-dataset" "$PREFIX-run" >/dev/null
        rm -rf "$STATE_DIR/tsdb" "$STATE_DIR/prometheus.yml" "$STATE_DIR/prometheus.log"
        rmdir "$STATE_DIR" 2>/dev/null || true
        say "removed $PREFIX's containers, network, volumes and Prometheus data"
    else
        say "removed $PREFIX's containers and network (volumes kept: down --volumes removes them)"
    fi
}

status() {
    require_engine
    docker ps -a --filter "label=$LABEL" --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'
}

case ${1:-} in
up) up ;;
down) down "${2:-}" ;;
status) status ;;
*) die "usage: docker/compose.sh up | down [--volumes] | status" ;;
esac
