#!/usr/bin/env bash
# docker/engine.sh (`make docker-engine`): make sure a docker engine answers, for `make images`.
# Nothing to do when `docker info` answers. Else, as root: install Debian's docker.io when dockerd is
# missing (it puts docker in /usr/bin; a docker CLI already in /usr/local/bin stays first on PATH and
# talks to it), then start the engine: `systemctl start docker` under systemd, else dockerd by hand in
# the background (overlay2 storage, cgroupfs cgroup driver; log in DOCKERD_LOG, default
# /var/log/dockerd.log). Fails with the reason when it cannot (not root, no apt-get, dockerd dies).
set -euo pipefail
log=${DOCKERD_LOG:-/var/log/dockerd.log}
say() { echo "docker-engine: $*" >&2; }
die() { say "$*"; exit 1; }

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    say "the engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "no docker engine answers, and starting one needs root (or a user in the docker group with a running engine)"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "no dockerd and no apt-get to install it: install Docker Engine"
    say "installing docker.io (apt-get)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io \
        || die "apt-get could not install docker.io"
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    say "systemctl start docker"
    systemctl start docker || die "systemctl start docker failed (journalctl -u docker says why)"
else
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        say "dockerd is running (pid $pid): waiting for it"
    else
        rm -f /var/run/docker.pid /var/run/docker.sock # left by a dockerd that is gone
        say "starting dockerd (log: $log)"
        mkdir -p "$(dirname "$log")"
        setsid nohup dockerd --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs \
            >>"$log" 2>&1 </dev/null &
    fi
fi
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
        say "the engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        exit 0
    fi
    sleep 1
done
say "the engine does not answer after 60 s; the end of $log:"
tail -n 20 "$log" >&2 2>/dev/null || true
exit 1
