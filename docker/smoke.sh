#!/usr/bin/env bash
# docker/smoke.sh VERSION (`make images-smoke`): start each image built by `make images` as the pods
# run it (read-only root filesystem, /tmp a tmpfs, uid 10001) with the least it needs, and wait until
# its gRPC health answers SERVING (`python -m facenas.rpc.healthcheck` inside the container):
#   store        a writable volume at /var/lib/facenas/store (the SQLite file)
#   searcher     a store: it runs in the store's network namespace (the default store address
#                127.0.0.1:50060; its metrics on 9091)
#   trainer      a dataset at /data/faces (read-only): 8 frames of `facenas data synth` (made with the
#                trainer image's CLI in a scratch volume)
#   latency_cpu  nothing
#   latency_snp  the same dataset (calibration images; the emulation backend)
# Everything it starts is removed at the end. Exit status 1 when an image does not come up.
set -euo pipefail
version=${1:?usage: docker/smoke.sh VERSION (make images-smoke passes it)}
prefix=facenas-smoke-$$
volume_store=$prefix-store
volume_faces=$prefix-faces
failed=()

cleanup() {
    docker rm -f "$prefix-store" "$prefix-searcher" "$prefix-trainer" "$prefix-latency_cpu" \
        "$prefix-latency_snp" >/dev/null 2>&1 || true
    docker volume rm -f "$volume_store" "$volume_faces" >/dev/null 2>&1 || true
}
trap cleanup EXIT

run() { # NAME ARGS...: start facenas/NAME:version detached, as the pods do
    local name=$1
    shift
    docker run -d --read-only --tmpfs /tmp --name "$prefix-$name" "$@" "facenas/$name:$version" >/dev/null
}

healthy() { # NAME: wait up to 60 s for SERVING
    local name=$1 status=""
    for _ in $(seq 60); do
        status=$(docker exec "$prefix-$name" python -m facenas.rpc.healthcheck 2>&1 | tail -n 1) || true
        if [ "$status" = SERVING ]; then
            echo "smoke: $name SERVING ($(docker image inspect -f '{{.Size}}' "facenas/$name:$version" | awk '{printf "%.0f MB", $1 / 1e6}'))"
            return 0
        fi
        [ "$(docker inspect -f '{{.State.Running}}' "$prefix-$name" 2>/dev/null)" = true ] || break
        sleep 1
    done
    echo "smoke: $name not SERVING (${status:-exited}); its log:" >&2
    docker logs "$prefix-$name" 2>&1 | tail -n 5 >&2
    failed+=("$name")
}

docker volume create "$volume_store" >/dev/null
docker volume create "$volume_faces" >/dev/null
docker run --rm --user 0 -v "$volume_faces:/out" --entrypoint facenas "facenas/trainer:$version" \
    data synth --out /out --count 8 --size 64 >/dev/null

run store -v "$volume_store:/var/lib/facenas/store"
run latency_cpu
run trainer -v "$volume_faces:/data/faces:ro"
run latency_snp -v "$volume_faces:/data/faces:ro" -e FACENAS_BACKEND=emulation
healthy store
run searcher --network "container:$prefix-store" -e FACENAS_METRICS_PORT=9091 # 9090: the store's
for name in searcher trainer latency_cpu latency_snp; do healthy "$name"; done

if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke: not serving: ${failed[*]}" >&2
    exit 1
fi
echo "smoke: all five images serve"
