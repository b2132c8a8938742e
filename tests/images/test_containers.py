"""The images of `make images`, started as deploy/k8s starts them (`make images-test`; never in `make test`).

Each image is started with the env the rendered manifests give its container (``kubectl kustomize``, the
helpers of tests/deploy), the pod's security context (user, read-only root filesystem, no capabilities,
no privilege escalation, privileged where a component says so), its volumes (emptyDir: a tmpfs; a claim:
a named volume; a Secret: a directory of its keys) and its resource limits (``--cpus``, ``--memory``).
What only a cluster has is replaced here, each replacement named where it is made:

- Kubernetes Service names (``store.facenas.svc.cluster.local``, the headless ``trainer-headless...``):
  network aliases of the containers on the system's network (docker/compose.sh), so env values stay as
  rendered;
- Secrets: made here (a throwaway CA's certificate for facenas-tls, a random token for facenas-api-token,
  a database of this host's PostgreSQL for facenas-postgres);
- ``resourceFieldRef`` env: the container's limit, as the kubelet computes it;
- the kubelet's native gRPC probes: ``python -m facenas.rpc.healthcheck --port P --service S`` run in the
  container (the same gRPC health call); exec probes run as written;
- hostPath volumes: a directory of this host (the SNPE SDK: empty, or tests/fakes' SDK), or left out where
  this host has none (``/dev/bus/usb``: no board here);
- ``nvidia.com/gpu``, node selectors and tolerations: scheduling only, nothing to start here.

The whole system runs through docker/compose.sh (`make up`) with env files written from the local overlay:
a tiny search runs to completion through the searcher's published port with the host's facenas CLI, while
one of its two trainers is killed (``docker kill``) during a training. Prometheus (the host's) scrapes every
container with deploy/prometheus/alerts.yaml. Every component of deploy/k8s/components then starts its
configuration in containers; those that need a cluster reach the point where they need it and say so.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import platform
import re
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_manifests import (
    HEALTHCHECK,
    containers,
    effective_env,
    ident,
    image_service,
    of_kind,
    pod_templates,
    prepare_command,
    renderer,
    selects,
)
from tests.images.conftest import IMAGES, TIMINGS, VERSION
from tests.integration.conftest import tiny_search
from tests.tools import PG_URL, postgres_unreachable, require_binary

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.sh"
SYSTEM_ENV = ROOT / "docker" / "system"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
FACENAS = ROOT / ".venv" / "bin" / "facenas"
DOMAIN = ".facenas.svc.cluster.local"
TRAINING = "Partial Training Val. IOU"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
#: the image whose code a manifest image runs: the CUDA trainer is the trainer built on nvidia/cuda
SERVICE_OF = {"trainer-cuda": "trainer"}
#: values of docker/system/*.env (`make up`) that differ from the local overlay's, and why
LOCAL_VALUES = {("trainer", "FACENAS_THREADS"): "one torch thread per trainer: they share this host's cores"}

Obj = dict[str, Any]
Render = Callable[[str], list[Obj]]


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    """``render(name)``: a rendered kustomization of tests/deploy's RENDERS (kubectl kustomize, cached)."""
    require_binary("kubectl", "v1.32 or newer, with its built-in kustomize")
    return renderer(tmp_path_factory.mktemp("kustomize"))


# --- running things ---------------------------------------------------------------------------------


def run(*command: str | Path, timeout: float = 120, check: bool = True, **kwargs: Any) -> Any:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} -> {done.returncode}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def inspect(name: str) -> Obj:
    return dict(json.loads(run("docker", "inspect", name).stdout)[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            socks = []
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no consecutive free ports")


def in_parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def http_get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


# --- from the manifests to docker run -----------------------------------------------------------------


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def image_name(container: Obj) -> str:
    """``facenas/<name>:<tag>`` -> name (``trainer-cuda`` for the CUDA variant)."""
    name = container["image"].split("@")[0].rsplit(":", 1)[0].removeprefix("facenas/")
    return str(name)


def deployment(objs: list[Obj], name: str) -> tuple[Obj, Obj]:
    """(pod template, its one container) of the Deployment ``name``."""
    (workload,) = [d for d in of_kind(objs, "Deployment") if d["metadata"]["name"] == name]
    template = workload["spec"]["template"]
    (container,) = template["spec"]["containers"]
    return template, container


def pod_env(objs: list[Obj], container: Obj, secret_values: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment as the kubelet sets it: ConfigMaps, literal values, resourceFieldRef
    (the limit, rounded up by the divisor) and secretKeyRef (``secret_values``: what stands in here)."""
    env = effective_env(objs, container)
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            kind, _, resource = ref["resource"].partition(".")
            assert resource == "cpu", f"{var['name']}: {ref}"
            value = cpus(container["resources"][kind][resource]) / cpus(str(ref.get("divisor", "1")))
            env[var["name"]] = str(math.ceil(value))
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secret_values[(ref["name"], ref["key"])]
        elif "valueFrom" in var:
            raise AssertionError(f"{var['name']}: no stand-in for {source}")
    return env


def resource_args(container: Obj) -> list[str]:
    """The limits as docker's: CPUs (at most this host's) and memory."""
    limits = container.get("resources", {}).get("limits", {})
    args = []
    if "cpu" in limits:
        args += ["--cpus", f"{min(cpus(limits['cpu']), float(os.cpu_count() or 1)):g}"]
    if "memory" in limits:
        args += ["--memory", str(memory_bytes(limits["memory"]))]
    return args


@dataclass
class Local:
    """What stands in here for the cluster's volumes and Secrets."""

    claims: dict[str, str] = field(default_factory=dict)  # claimName -> docker volume
    secrets: dict[str, Path] = field(default_factory=dict)  # Secret -> directory of its keys
    host_paths: dict[str, Path | None] = field(default_factory=dict)  # hostPath -> directory here / none
    notes: list[str] = field(default_factory=list)  # what was left out, for the failure messages


def pod_args(template: Obj, container: Obj, local: Local, *, volumes: bool = True) -> list[str]:
    """`docker run` arguments for the pod's security context, resources and (with ``volumes``) mounts."""
    spec = template["spec"]
    pod = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    args = ["--user", f"{pod['runAsUser']}:{pod['runAsGroup']}"]
    for group in [*pod.get("supplementalGroups", []), *([pod["fsGroup"]] if "fsGroup" in pod else [])]:
        args += ["--group-add", str(group)]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", "ALL"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if security.get("privileged"):
        args.append("--privileged")
    args += resource_args(container)
    if not volumes:
        return args
    declared = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume, path = declared[mount["name"]], mount["mountPath"]
        read_only = bool(mount.get("readOnly"))
        if "emptyDir" in volume:
            args += ["--tmpfs", f"{path}:mode=1777"]
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            read_only = read_only or bool(claim.get("readOnly"))
            args += ["-v", f"{local.claims[claim['claimName']]}:{path}:{'ro,' if read_only else ''}nocopy"]
        elif "secret" in volume:
            args += ["-v", f"{local.secrets[volume['secret']['secretName']]}:{path}:ro"]
        elif "hostPath" in volume:
            here = local.host_paths[volume["hostPath"]["path"]]
            if here is None:
                local.notes.append(f"hostPath {volume['hostPath']['path']} left out: this host has none")
                continue
            args += ["-v", f"{here}:{path}{':ro' if read_only else ''}"]
        else:
            raise AssertionError(f"{mount['name']}: no stand-in for {volume}")
    return args


def probe_command(probe: Obj) -> list[str]:
    """What runs a probe in the container: an exec probe's command, or for the kubelet's native gRPC probe
    the health check that makes the same call."""
    if "exec" in probe:
        return list(probe["exec"]["command"])
    grpc = probe["grpc"]
    return [*HEALTHCHECK, "--port", str(grpc["port"]), "--service", grpc.get("service", "")]


def secret_dir(directory: Path, files: dict[str, bytes]) -> Path:
    """A Secret as the kubelet mounts it with defaultMode 0440 and fsGroup 10001."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        if os.geteuid() == 0:
            os.chown(path, 0, 10001)
            path.chmod(0o440)
        else:
            path.chmod(0o444)
    return directory


def write_env_dir(
    directory: Path, objs: list[Obj], secret_values: dict[tuple[str, str], str], local: Local
) -> Path:
    """docker/compose.sh's ENV_DIR for a render: <image>.env, every container's env as the kubelet sets it;
    <image>.args, its resource limits and Secret mounts (compose.sh mounts the claims and the tmpfs)."""
    directory.mkdir(parents=True, exist_ok=True)
    for workload, template in pod_templates(objs):
        if workload["kind"] != "Deployment":
            continue
        (container,) = template["spec"]["containers"]
        image = image_name(container)
        env = pod_env(objs, container, secret_values)
        (directory / f"{image}.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
        args = resource_args(container)
        declared = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            if "secret" in declared[mount["name"]]:
                source = local.secrets[declared[mount["name"]]["secret"]["secretName"]]
                args += ["--volume", f"{source}:{mount['mountPath']}:ro"]
        (directory / f"{image}.args").write_text("".join(f"{a}\n" for a in args))
    return directory


# --- what the images accept -------------------------------------------------------------------------

#: run in an image: the FACENAS_* variables its service's flags read (recorded as they are read)
_ACCEPTS = r"""
import importlib, json, os, sys
read = set()
environ = type(os.environ)
getitem = environ.__getitem__
def recording(self, key):
    if isinstance(key, str) and key.startswith("FACENAS_"):
        read.add(key)
    return getitem(self, key)
environ.__getitem__ = recording
parser = importlib.import_module(f"services.{sys.argv[1]}.server").parser()
parser.parse([])
print(json.dumps(sorted(read)))
"""


@dataclass(frozen=True)
class Accepts:
    env: frozenset[str]
    user: str
    ports: frozenset[int]
    entrypoint: tuple[str, ...]


@pytest.fixture(scope="module")
def accepts(docker: str) -> dict[str, Accepts]:
    """For each image: the env names its service reads (asked in the image), its user, exposed ports and
    entrypoint."""

    def ask(image: str) -> Accepts:
        tag = f"facenas/{image}:{VERSION}"
        done = run(
            "docker",
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--entrypoint",
            "python",
            tag,
            "-c",
            _ACCEPTS,
            image,
        )
        read = json.loads(done.stdout.strip().splitlines()[-1])
        config = json.loads(run("docker", "image", "inspect", tag).stdout)[0]["Config"]
        ports = frozenset(int(p.split("/")[0]) for p in config.get("ExposedPorts", {}))
        return Accepts(
            frozenset(read),
            config["User"],
            ports,
            tuple(config["Entrypoint"]),
        )

    answers = in_parallel([lambda image=image: ask(image) for image in IMAGES])
    return dict(zip(IMAGES, answers, strict=True))


# --- the manifests against the images ------------------------------------------------------------------


def every_render() -> list[str]:
    """The local overlay, the production one and base with each component."""
    components = sorted(p.name for p in (ROOT / "deploy" / "k8s" / "components").iterdir() if p.is_dir())
    return ["overlay-local", "overlay-production", *(f"base+{c}" for c in components)]


def test_manifest_images_ports_env_and_args_are_what_the_images_accept(
    render: Render, accepts: dict[str, Accepts]
) -> None:
    configmap_names: set[str] = set()
    all_read = frozenset().union(*(a.env for a in accepts.values()))
    for name in every_render():
        objs = render(name)
        for cm in of_kind(objs, "ConfigMap"):
            if cm["metadata"]["name"].startswith("facenas-config"):
                configmap_names |= set(cm.get("data", {}))
        for workload, template in pod_templates(objs):
            pod = template["spec"].get("securityContext", {})
            for container in containers(template):
                where = f"{name}: {ident(workload)} {container['name']}"
                image = image_name(container)
                service = SERVICE_OF.get(image, image)
                assert image_service(container["image"])[0] == service, where
                assert container["image"].endswith(f":{VERSION}"), (
                    f"{where}: {container['image']} (make images)"
                )
                image_has = accepts[service]
                assert image_has.user == f"{pod['runAsUser']}:{pod['runAsGroup']}", f"{where}: image user"
                command = container.get("command", [])
                if workload["kind"] == "Deployment":
                    # the image's entrypoint runs the service: no command or args to override it
                    assert not command and not container.get("args"), where
                    assert image_has.entrypoint == ("python", "-m", f"services.{service}"), where
                    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                    assert set(ports.values()) == image_has.ports, f"{where}: {ports} vs EXPOSE"
                    env = pod_env(objs, container, {("facenas-postgres", "url"): "postgresql://x@h/db"})
                    assert int(env["FACENAS_PORT"]) == ports["grpc"], where
                    assert int(env["FACENAS_METRICS_PORT"]) == ports["metrics"], where
                    for probe in PROBES:
                        argv = probe_command(container[probe])
                        assert argv[: len(HEALTHCHECK)] == HEALTHCHECK, f"{where} {probe}"
                        assert argv[argv.index("--port") + 1] == str(ports["grpc"]), f"{where} {probe}"
                    # every variable set on the container itself is one its service reads
                    own = {v["name"] for v in container.get("env", [])}
                    unknown = own - image_has.env
                    assert not unknown, f"{where}: the image's service reads none of {sorted(unknown)}"
                else:  # a Job: a facenas CLI command, every $(VAR) it uses defined
                    used = set(re.findall(r"\$\((\w+)\)", " ".join(command)))
                    defined = {v["name"] for v in container.get("env", [])} | set(
                        effective_env(objs, container)
                    )
                    assert used <= defined, f"{where}: {sorted(used - defined)} undefined"
                    assert command[0] in ("facenas", "python"), where
    unknown = configmap_names - all_read
    assert not unknown, f"facenas-config sets variables no service reads: {sorted(unknown)}"
    # (the recording in the images saw the reads)
    assert {"FACENAS_STORE", "FACENAS_TRAINER", "FACENAS_DATASET_DIR"} <= all_read


def test_every_image_the_manifests_name_is_built_here_but_the_cuda_trainer(
    docker: str, render: Render
) -> None:
    named = {c["image"] for n in every_render() for _, t in pod_templates(render(n)) for c in containers(t)}
    missing = {i for i in named if run("docker", "image", "inspect", i, check=False).returncode}
    # components/gpu's image: docker/trainer/Dockerfile.cuda starts from nvidia/cuda, which cannot be
    # pulled here (`make images-cuda` builds it where it can); test_gpu_component starts the CPU trainer
    # with that component's env instead
    assert missing <= {f"facenas/trainer-cuda:{VERSION}"}, f"not built: {sorted(missing)} (make images)"


def test_make_up_env_files_are_the_local_overlays(render: Render) -> None:
    """docker/system/*.env (what `make up` starts with) hold the local overlay's env, Service names
    shortened to the containers' names; LOCAL_VALUES lists the values chosen for this host instead."""
    objs = render("overlay-local")
    common = dotenv(SYSTEM_ENV / "common.env")
    for workload, template in pod_templates(objs):
        if workload["kind"] != "Deployment":
            continue
        (container,) = template["spec"]["containers"]
        image = image_name(container)
        wanted = {k: v.replace(DOMAIN, "") for k, v in pod_env(objs, container, {}).items()}
        here = {**common, **dotenv(SYSTEM_ENV / f"{image}.env")}
        assert set(here) == set(wanted), f"{image}: {sorted(set(here) ^ set(wanted))}"
        differ = {k for k in wanted if here[k] != wanted[k] and (image, k) not in LOCAL_VALUES}
        assert not differ, f"{image}: {[(k, here[k], wanted[k]) for k in sorted(differ)]}"


def dotenv(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


# --- the dataset Job --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(docker: str) -> Iterator[Callable[[str], str]]:
    """``scratch(kind)``: a name for a container or volume this module removes at its end."""
    made: list[str] = []
    token = f"fnimg-{os.getpid()}"

    def name(kind: str) -> str:
        made.append(f"{token}-{kind}")
        return made[-1]

    yield name
    for thing in made:
        run("docker", "rm", "-f", "-v", thing, check=False)
        run("docker", "volume", "rm", "-f", thing, check=False)


def test_the_dataset_job_of_the_local_overlay_runs_in_the_trainer_image(
    render: Render, scratch: Callable[[str], str]
) -> None:
    """deploy/k8s's dataset-prepare Job (local overlay: synthetic faces first, in its init container), each
    container with its command, env and security context, on a fresh volume standing in for the claim."""
    objs = render("overlay-local")
    job, container, _ = prepare_command(objs)
    template = job["spec"]["template"]
    volume = scratch("dataset")
    run("docker", "volume", "create", volume)
    # fsGroup: the claim is writable by group 10001 in the pod; here the volume is made the user's
    run(
        "docker",
        "run",
        "--rm",
        "--user",
        "0",
        "-v",
        f"{volume}:/data/faces:nocopy",
        "--entrypoint",
        "chown",
        f"facenas/trainer:{VERSION}",
        "10001:10001",
        "/data/faces",
    )
    local = Local(claims={"facenas-dataset": volume})
    started = time.monotonic()
    for step in [*template["spec"].get("initContainers", []), container]:
        env = pod_env(objs, step, {})
        command = [re.sub(r"\$\((\w+)\)", lambda m, env=env: env[m.group(1)], a) for a in step["command"]]
        env_args = [a for k, v in sorted(env.items()) for a in ("-e", f"{k}={v}")]
        done = run(
            "docker",
            "run",
            "--rm",
            *pod_args(template, step, local),
            *env_args,
            "--entrypoint",
            command[0],
            step["image"],
            *command[1:],
            timeout=300,
        )
        assert done.returncode == 0
    TIMINGS["dataset Job (init container and prepare)"] = time.monotonic() - started
    size = pod_env(objs, container, {})["FACENAS_CACHE_IMG_SIZE"]
    (synth,) = template["spec"]["initContainers"]
    frames = int(re.findall(r"count = .*, (\d+)$", synth["command"][-1], re.MULTILINE)[0])
    counts = run(
        "docker",
        "run",
        "--rm",
        "-v",
        f"{volume}:/data/faces:ro,nocopy",
        "--entrypoint",
        "sh",
        f"facenas/trainer:{VERSION}",
        "-c",
        f"ls /data/faces | grep -c _seg.png; ls /data/faces/.facenas-cache/{size} | wc -l",
    ).stdout.split()
    assert int(counts[0]) == frames and int(counts[1]) > 0, counts


# --- the system (docker/compose.sh, env from the local overlay) ----------------------------------------


@dataclass
class System:
    prefix: str
    env: dict[str, str]  # compose.sh's settings
    searcher: str  # host:port of the published searcher
    metrics: dict[str, int]  # container -> published /metrics port
    prometheus: str
    images: dict[str, str]  # container -> image

    def container(self, name: str) -> str:
        return f"{self.prefix}-{name}"


def compose(action: str, env: dict[str, str], *extra: str, timeout: float = 600) -> Any:
    return run(COMPOSE, action, *extra, env={**os.environ, **env}, timeout=timeout)


@pytest.fixture(scope="module")
def system(docker: str, render: Render, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    require_binary("prometheus", "apt-get install prometheus")
    objs = render("overlay-local")
    tmp = tmp_path_factory.mktemp("system")
    _, job_container, _ = prepare_command(objs)
    trainers = 2
    base = free_ports(4 + trainers)
    settings = {
        "VERSION": VERSION,
        "PREFIX": f"fnimg-{os.getpid()}",
        "SEARCHER_PORT": str(free_port()),
        "METRICS_PORT": str(base),
        "PROMETHEUS": "1",
        "PROMETHEUS_PORT": str(free_port()),
        "SCRAPE_INTERVAL": "1s",
        "TRAINERS": str(trainers),
        "IMG_SIZE": pod_env(objs, job_container, {})["FACENAS_CACHE_IMG_SIZE"],
        "ENV_DIR": str(write_env_dir(tmp / "env", objs, {}, Local())),
        "STATE_DIR": str(tmp / "state"),
    }
    started = time.monotonic()
    try:
        compose("up", settings)
        TIMINGS["system up (docker/compose.sh up: data, 6 services, Prometheus)"] = time.monotonic() - started
        images = {
            "store": "store",
            "searcher": "searcher",
            "latency-cpu": "latency_cpu",
            "latency-snp": "latency_snp",
        }
        images.update({f"trainer-{i}": "trainer" for i in range(1, trainers + 1)})
        order = [
            "store",
            "searcher",
            "latency-cpu",
            "latency-snp",
            *(f"trainer-{i}" for i in range(1, trainers + 1)),
        ]
        yield System(
            settings["PREFIX"],
            settings,
            f"127.0.0.1:{settings['SEARCHER_PORT']}",
            {name: base + i for i, name in enumerate(order)},
            f"http://127.0.0.1:{settings['PROMETHEUS_PORT']}",
            images,
        )
    finally:
        compose("down", settings, "--volumes")


def deployment_of(objs: list[Obj], container_name: str) -> str:
    """The Deployment a system container stands for (trainer-2 -> trainer)."""
    name = re.sub(r"-\d+$", "", container_name)
    assert any(d["metadata"]["name"] == name for d in of_kind(objs, "Deployment")), container_name
    return name


def test_every_container_runs_as_its_pod(system: System, render: Render) -> None:
    """Non-root, read-only root filesystem, no capabilities, no privilege escalation, the pod's mounts and
    the env of its Deployment."""
    objs = render("overlay-local")
    for name in system.images:
        template, container = deployment(objs, deployment_of(objs, name))
        where = system.container(name)
        state = inspect(where)
        config, host = state["Config"], state["HostConfig"]
        pod = template["spec"]["securityContext"]
        assert config["User"] == f"{pod['runAsUser']}:{pod['runAsGroup']}", where
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], where
        assert "no-new-privileges" in host["SecurityOpt"] and not host["Privileged"], where
        limits = container["resources"]["limits"]
        assert host["Memory"] == memory_bytes(limits["memory"]), where
        assert host["NanoCpus"] == round(min(cpus(limits["cpu"]), os.cpu_count() or 1) * 1e9), where
        env = dict(e.split("=", 1) for e in config["Env"])
        wanted = pod_env(objs, container, {})
        assert {k: env.get(k) for k in wanted} == wanted, where
        declared = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["Destination"]: m for m in state["Mounts"]}
        for mount in container["volumeMounts"]:
            volume = declared[mount["name"]]
            if "emptyDir" in volume:
                assert mount["mountPath"] in host["Tmpfs"], f"{where}: {mount}"
            else:
                read_only = bool(mount.get("readOnly") or volume["persistentVolumeClaim"].get("readOnly"))
                assert mounts[mount["mountPath"]]["RW"] is not read_only, f"{where}: {mount}"
    # inside: uid/gid 10001, / refuses writes, /tmp takes them
    check = (
        "import errno, os\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n open('/written', 'w')\nexcept OSError as err:\n print(errno.errorcode[err.errno])\n"
        "open('/tmp/written', 'w').close(); print('tmp ok')\n"
    )
    answers = in_parallel(
        [
            lambda n=n: run("docker", "exec", system.container(n), "python", "-c", check).stdout
            for n in system.images
        ]
    )
    for name, answer in zip(system.images, answers, strict=True):
        assert answer.split() == ["10001", "10001", "EROFS", "tmp", "ok"], f"{name}: {answer}"


def test_every_probe_of_the_manifests_passes_in_its_container(system: System, render: Render) -> None:
    objs = render("overlay-local")
    calls = []
    for name in system.images:
        _, container = deployment(objs, deployment_of(objs, name))
        for argv in {tuple(probe_command(container[p])) for p in PROBES}:
            calls.append((name, argv))
    answers = in_parallel(
        [lambda n=n, a=a: run("docker", "exec", system.container(n), *a, check=False) for n, a in calls]
    )
    failed = [
        f"{n} {' '.join(a)}: {d.returncode} {d.stdout}{d.stderr}"
        for (n, a), d in zip(calls, answers, strict=True)
        if d.returncode != 0 or d.stdout.strip() != "SERVING"
    ]
    assert not failed, failed


def prometheus_query(system: System, path: str) -> Any:
    return json.loads(http_get(f"{system.prometheus}{path}"))["data"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.5)


def test_every_container_serves_metrics_and_prometheus_scrapes_them_with_the_rules(system: System) -> None:
    for name, port in system.metrics.items():
        text = http_get(f"http://127.0.0.1:{port}/metrics")
        assert "# TYPE facenas_" in text, f"{name}: {text[:300]}"

    def all_up() -> list[Obj] | None:
        targets = prometheus_query(system, "/api/v1/targets")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for("every target up", all_up, 30)
    scraped = {int(t["labels"]["instance"].rsplit(":", 1)[1]): t["labels"]["job"] for t in targets}
    assert scraped == {port: f"facenas-{system.images[name]}" for name, port in system.metrics.items()}
    rules = {
        r["name"]: r["health"]
        for g in prometheus_query(system, "/api/v1/rules")["groups"]
        for r in g["rules"]
    }
    alerts = [
        r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r
    ]
    assert rules == dict.fromkeys(alerts, "ok"), rules


def test_monitoring_component_podmonitors_and_rules_match_what_prometheus_loads(
    system: System, render: Render
) -> None:
    """components/monitoring needs the Prometheus Operator's CRDs (a cluster): its PodMonitors select
    every Deployment's `metrics` port at /metrics, what compose.sh's Prometheus scrapes here; its
    PrometheusRule holds the rules the host's Prometheus loaded from deploy/prometheus/alerts.yaml."""
    objs = render("base+monitoring")
    monitors = of_kind(objs, "PodMonitor")
    for workload, template in pod_templates(objs):
        if workload["kind"] != "Deployment":
            continue
        labels = template["metadata"]["labels"]
        (monitor,) = [m for m in monitors if selects(m["spec"]["selector"], labels)]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert endpoint["path"] == "/metrics" and ports[endpoint["port"]] == 9090, ident(workload)
    published = {
        inspect(system.container(n))["HostConfig"]["PortBindings"].get("9090/tcp", [{}])[0].get("HostPort")
        for n in system.images
    }
    assert published == {str(p) for p in system.metrics.values()}
    (rule,) = of_kind(objs, "PrometheusRule")
    in_rule = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    loaded = [r["name"] for g in prometheus_query(system, "/api/v1/rules")["groups"] for r in g["rules"]]
    assert in_rule == loaded


def test_network_policies_component_ports_are_the_published_ones(system: System, render: Render) -> None:
    """components/network-policies needs a cluster whose network plugin enforces NetworkPolicy. What it
    admits is each pod's `grpc` port from the searcher and clients, and `metrics` from Prometheus: here
    compose.sh publishes only the searcher's gRPC port and the metrics ports, on 127.0.0.1; every other
    port is reachable on the system's network alone."""
    objs = render("base+network-policies")
    for policy in of_kind(objs, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for template in [
                    t
                    for _, t in pod_templates(objs)
                    if selects(policy["spec"]["podSelector"], t["metadata"]["labels"])
                ]:
                    names = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
                    assert port["port"] in names, (
                        f"{ident(policy)}: {port} not a port of {template['metadata']['labels']}"
                    )
    for name in system.images:
        bindings = inspect(system.container(name))["HostConfig"]["PortBindings"]
        allowed = {"9090/tcp", "50051/tcp"} if name == "searcher" else {"9090/tcp"}
        assert set(bindings) == allowed, f"{name}: {bindings}"
        assert {b["HostIp"] for v in bindings.values() for b in v} == {"127.0.0.1"}, f"{name}: {bindings}"


def test_a_tiny_search_completes_with_the_host_cli_while_a_trainer_is_killed(
    system: System, tmp_path: Path
) -> None:
    """`facenas search start --watch` from the host through the searcher's published port; once a training
    runs, its trainer container is killed (docker kill): the search still completes, that training done
    again on the other trainer, and Prometheus sees the killed one down."""
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_search(iters=3, steps=10))
    by_ip = {}
    for name in system.images:
        if name.startswith("trainer-"):
            networks = inspect(system.container(name))["NetworkSettings"]["Networks"]
            by_ip[networks[system.prefix]["IPAddress"]] = name
    search_id = f"images-test-{os.getpid()}"
    command = [
        str(FACENAS),
        "search",
        "start",
        str(config),
        "--searcher",
        system.searcher,
        "--id",
        search_id,
        "--name",
        "images-test",
        "--watch",
        "--json",
    ]
    started = time.monotonic()
    events: list[Obj] = []
    killed: tuple[str, str] | None = None  # (container, archid)
    errors = tmp_path / "watch.stderr"
    with (
        errors.open("w") as stderr,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True) as watch,
    ):
        try:
            assert watch.stdout is not None
            for line in watch.stdout:
                event = json.loads(line)
                events.append(event)
                if killed is None and event.get("kind") == "progress":
                    for item in event["running"]:
                        ip = item.get("replica", "").rsplit(":", 1)[0]
                        if item["objective"] == TRAINING and item.get("state") == "running" and ip in by_ip:
                            killed = (by_ip[ip], item["archid"])
                            run("docker", "kill", system.container(killed[0]))
                            TIMINGS["a trainer killed, after"] = time.monotonic() - started
                            break
            watch.wait(timeout=60)
        finally:
            if watch.poll() is None:
                watch.kill()
    elapsed = time.monotonic() - started
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    TIMINGS["tiny search through the containers (3 iterations, 2 trainers, one killed)"] = elapsed
    assert watch.returncode == 0, f"{errors.read_text()[-3000:]}\n{events[-5:]}"
    summary = events[-1]
    assert summary["search"]["status"] == "SEARCH_STATUS_COMPLETED", summary
    assert summary["iterations_done"] == 3 and summary["evaluations_done"] == summary["candidates"], summary
    assert killed is not None, "no training was seen running on a trainer container"
    victim, archid = killed
    assert inspect(system.container(victim))["State"]["Running"] is False
    done = [
        e
        for e in events
        if e.get("kind") == "evaluation" and e["archid"] == archid and e["objective"] == TRAINING
    ][-1]
    assert by_ip.get(done["replica"].rsplit(":", 1)[0]) not in (None, victim), done
    port = system.metrics[victim]

    def victim_down() -> bool:
        result = prometheus_query(system, f'/api/v1/query?query=up{{instance="127.0.0.1:{port}"}}')["result"]
        return bool(result) and result[0]["value"][1] == "0"

    wait_for(f"Prometheus sees {victim} down", victim_down, 30)


# --- the components, each in its containers -------------------------------------------------------------


def start(
    name: str, image: str, args: list[str], env: dict[str, str], *, detach: bool, timeout: float = 180
) -> Any:
    env_args = [a for k, v in sorted(env.items()) for a in ("-e", f"{k}={v}")]
    mode = ["--detach"] if detach else ["--rm"]
    return run("docker", "run", *mode, "--name", name, *args, *env_args, image, timeout=timeout, check=detach)


def health(name: str, argv: list[str]) -> Any:
    return run("docker", "exec", name, *argv, check=False)


def wait_probe(name: str, argv: list[str], timeout: float = 90) -> None:
    def serving() -> bool:
        if not inspect(name)["State"]["Running"]:
            pytest.fail(f"{name} exited: {run('docker', 'logs', name, check=False).stderr[-2000:]}")
        return health(name, argv).stdout.strip() == "SERVING"

    wait_for(f"{name}: {' '.join(argv)} SERVING", serving, timeout)


def test_autoscale_component_searcher_says_it_needs_the_cluster_api(
    render: Render, scratch: Callable[[str], str]
) -> None:
    """The searcher with components/autoscale's env needs the Kubernetes API (the pod's service account,
    automounted by that component; no cluster here): it does not start, and says so."""
    objs = render("base+autoscale")
    template, container = deployment(objs, "searcher")
    assert template["spec"]["automountServiceAccountToken"] is True
    env = pod_env(objs, container, {})
    assert env["FACENAS_AUTOSCALE_TRAINERS"] == "1:8"
    done = start(
        scratch("autoscale"), container["image"], pod_args(template, container, Local()), env, detach=False
    )
    assert done.returncode == 2, done.stderr
    assert "needs the Kubernetes API" in done.stderr and "Service host/port is not set" in done.stderr, (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_gpu_component_trainer_says_there_is_no_gpu(
    system: System, render: Render, scratch: Callable[[str], str]
) -> None:
    """components/gpu's trainer, with the CPU image standing in for facenas/trainer-cuda where that is not
    built (docker/trainer/Dockerfile.cuda needs nvidia/cuda): FACENAS_DEVICE=cuda and no GPU here, so it
    refuses to start on the CPU, saying why. Its nvidia.com/gpu limit, node selector and toleration are
    scheduling: a GPU node would give it the device."""
    objs = render("base+gpu")
    template, container = deployment(objs, "trainer")
    image = container["image"]
    if run("docker", "image", "inspect", image, check=False).returncode:
        image = f"facenas/trainer:{VERSION}"
    env = pod_env(objs, container, {})
    assert env["FACENAS_DEVICE"] == "cuda"
    local = Local(claims={"facenas-dataset": f"{system.prefix}-dataset"})
    done = start(scratch("gpu"), image, pod_args(template, container, local), env, detach=False)
    assert done.returncode == 2, done.stderr
    assert "--device cuda: no CUDA GPU is visible on this host" in done.stderr, done.stderr


def test_snapdragon_component_latency_snp_says_what_it_lacks(
    system: System, render: Render, scratch: Callable[[str], str], tmp_path: Path
) -> None:
    """latency_snp with components/snapdragon's env and privileges (privileged, group plugdev) and the
    node's /opt/snpe: with an empty SDK directory it refuses to start, naming the missing SNPE tool; with
    tests/fakes' SDK and no board attached it serves (liveness) but is not ready, saying no board is there.
    /dev/bus/usb (the boards' USB device nodes) is left out where this host has none."""
    objs = render("base+snapdragon")
    template, container = deployment(objs, "latency-snp")
    env = pod_env(objs, container, {})
    assert env["FACENAS_BACKEND"] == "snpe" and env["FACENAS_SNPE_ROOT"] == "/opt/snpe"
    usb = Path("/dev/bus/usb")
    empty = tmp_path / "opt-snpe"
    empty.mkdir()
    local = Local(
        claims={"facenas-dataset": f"{system.prefix}-dataset"},
        host_paths={"/opt/snpe": empty, str(usb): usb if usb.is_dir() else None},
    )
    args = pod_args(template, container, local)
    assert "--privileged" in args and "46" in args
    done = start(scratch("snp-no-sdk"), container["image"], args, env, detach=False)
    assert done.returncode == 2, done.stderr
    assert "SNPE tool 'snpe-onnx-to-dlc' is neither on PATH nor in /opt/snpe" in done.stderr, done.stderr

    # tests/fakes' SDK tools (Python scripts run from the repository, mounted read-only) and adb with no board
    from tests.fakes.fixture import FakeSnpe

    fake = FakeSnpe(tmp_path / "fake")
    state = fake.state_dir
    for path in (state, *state.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)
    local.host_paths["/opt/snpe"] = FakeSnpe.sdk_root
    faked = {
        **env,
        "PATH": "/src/tests/fakes/bin:/opt/venv/bin:/usr/bin:/bin",
        "FACENAS_FAKE_SNPE_STATE": "/state",
    }
    name = scratch("snp-no-board")
    start(
        name,
        container["image"],
        [*pod_args(template, container, local), "-v", f"{ROOT}:/src:ro", "-v", f"{state}:/state"],
        faked,
        detach=True,
    )
    try:
        wait_probe(name, probe_command(container["livenessProbe"]))
        readiness = health(name, probe_command(container["readinessProbe"]))
        assert readiness.stdout.strip() == "NOT_SERVING", readiness
        logs = run("docker", "logs", name).stderr
        assert "no healthy Snapdragon board is attached (adb devices lists none)" in logs, logs[-2000:]
    finally:  # it mounts the system's dataset volume, which the system's teardown removes
        run("docker", "rm", "-f", name, check=False)


def test_cpu_latency_component_latency_cpu_serves_on_pinned_cpus(
    render: Render, scratch: Callable[[str], str]
) -> None:
    """components/cpu-latency: Guaranteed QoS (requests == limits: 2 CPUs, 2 GiB), which with the kubelet's
    static CPU manager means cores of its own: here --cpus and --cpuset-cpus on this host's first CPUs.
    Its node selector (amd64) is scheduling."""
    objs = render("base+cpu-latency")
    template, container = deployment(objs, "latency-cpu")
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    assert template["spec"]["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    if platform.machine() not in ("x86_64", "amd64"):
        pytest.fail(f"this {platform.machine()} host is not a node components/cpu-latency schedules on")
    whole = min(int(cpus(resources["limits"]["cpu"])), os.cpu_count() or 1)
    args = [*pod_args(template, container, Local()), "--cpuset-cpus", f"0-{whole - 1}"]
    name = scratch("cpu-latency")
    start(name, container["image"], args, pod_env(objs, container, {}), detach=True)
    for probe in PROBES:
        wait_probe(name, probe_command(container[probe]))


@pytest.fixture(scope="module")
def database(docker: str) -> Iterator[str]:
    """A database of this host's PostgreSQL of its own (the suite's `test` database stays untouched)."""
    import psycopg

    name = f"facenas_images_{os.getpid()}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as err:
        postgres_unreachable(err)
    yield admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_security_and_postgres_components_run_the_system_over_mtls_on_postgresql(
    render: Render, database: str, tmp_path: Path
) -> None:
    """The system with components/security and components/postgres (docker/compose.sh STORE=postgres, env
    from their render): every service serves mTLS with the facenas-tls Secret (a throwaway CA's
    certificate for the name `facenas`, made here), the probes run the health check over it as written,
    the store keeps its data in PostgreSQL (facenas-postgres: a database of this host's), and the
    searcher's API takes the facenas-api-token Secret's token from the host's CLI, and nothing without."""
    from tests.fakes.certs import TestCA

    objs = render("base+postgres+security")
    ca = TestCA(tmp_path / "ca")
    issued = ca.tls_dir(tmp_path / "client", "facenas", extra_names=("facenas",))
    token = secrets.token_hex(32)
    local = Local(
        secrets={
            "facenas-tls": secret_dir(
                tmp_path / "facenas-tls",
                {n: (issued / n).read_bytes() for n in ("tls.crt", "tls.key", "ca.crt")},
            ),
            "facenas-api-token": secret_dir(tmp_path / "facenas-api-token", {"token": token.encode()}),
        }
    )
    settings = {
        "VERSION": VERSION,
        "PREFIX": f"fnimg-{os.getpid()}-secure",
        "SEARCHER_PORT": str(free_port()),
        "METRICS_PORT": "",
        "PROMETHEUS": "0",
        "TRAINERS": "1",
        "STORE": "postgres",
        "PG_URL": database,
        "PG_RELAY_PORT": str(free_port()),
        "ENV_DIR": str(write_env_dir(tmp_path / "env", objs, {("facenas-postgres", "url"): database}, local)),
        "STATE_DIR": str(tmp_path / "state"),
    }
    started = time.monotonic()
    try:
        compose("up", settings)
        TIMINGS["security+postgres system up"] = time.monotonic() - started
        names = {
            "store": "store",
            "searcher": "searcher",
            "latency-cpu": "latency-cpu",
            "latency-snp": "latency-snp",
            "trainer-1": "trainer",
        }
        calls = []
        for name, workload in names.items():
            _, container = deployment(objs, workload)
            for probe in PROBES:
                assert "exec" in container[probe], (
                    f"{workload} {probe}: the kubelet's gRPC probe cannot speak TLS"
                )
                calls.append((name, probe_command(container[probe])))
        answers = in_parallel([lambda n=n, a=a: health(f"{settings['PREFIX']}-{n}", a) for n, a in calls])
        failed = [
            (n, a, d.stdout + d.stderr)
            for (n, a), d in zip(calls, answers, strict=True)
            if d.stdout.strip() != "SERVING"
        ]
        assert not failed, failed
        # plaintext is refused (what the kubelet's native gRPC probe would speak)
        plain = run(
            "docker",
            "exec",
            "-e",
            "FACENAS_TLS_DIR=",
            "-e",
            "FACENAS_TLS_SERVER_NAME=",
            f"{settings['PREFIX']}-store",
            *HEALTHCHECK,
            "--port",
            "50060",
            check=False,
        )
        assert plain.returncode != 0 and "SERVING" not in plain.stdout, plain

        cli = [str(FACENAS), "search", "--tls-dir", str(issued), "--tls-server-name", "facenas"]
        listing = ["list", "--searcher", f"127.0.0.1:{settings['SEARCHER_PORT']}", "--json"]
        token_file = local.secrets["facenas-api-token"] / "token"
        allowed = run(*cli[:2], "--api-token-file", token_file, *cli[2:], *listing)
        assert json.loads(allowed.stdout) == {"searches": []} or "searches" in allowed.stdout, allowed.stdout
        refused = run(*cli, *listing, check=False)
        assert refused.returncode != 0 and "token" in (refused.stdout + refused.stderr).lower(), refused
        import psycopg

        with psycopg.connect(database, connect_timeout=10) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
        assert {"searches", "evaluations"} <= tables, tables
    finally:
        compose("down", settings, "--volumes")
