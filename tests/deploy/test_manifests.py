"""The Kubernetes manifests in deploy/k8s: every overlay, every component on top of base and all
components together render with ``kubectl kustomize``, pass the Kubernetes 1.32 schemas (strict: no
unknown fields) and hang together (selectors, ports, addresses, images, hardening)."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from facenas.rpc.health import LIVENESS
from tests.tools import require_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SERVICES = ROOT / "services"
KUBECTL = shutil.which("kubectl")
KUBERNETES_VERSION = "1.32"


@pytest.fixture(autouse=True)
def kubectl() -> str:
    """kubectl renders the kustomizations: without it every test here fails, saying so."""
    return require_binary("kubectl", "v1.32 or newer, with its built-in kustomize")


COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if (p / "kustomization.yaml").exists())
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
#: render name -> (kustomization directory, or None for base plus the named components)
#: every overlay, and base with no component, each component alone, every pair of components and all of
#: them (an operator may switch on any set: components patch different fields, so a conflict shows
#: between two of them; every set of all 2^n would render 256 times for 8 components)
_COMBOS = [
    (),
    *itertools.combinations(COMPONENTS, 1),
    *itertools.combinations(COMPONENTS, 2),
    tuple(COMPONENTS),
]
RENDERS: dict[str, tuple[Path | None, tuple[str, ...]]] = {
    **{f"overlay-{o}": (K8S / "overlays" / o, ()) for o in OVERLAYS},
    **{"base+" + ("+".join(combo) or "no-components"): (None, combo) for combo in dict.fromkeys(_COMBOS)},
}
#: custom resources (no schema in kubernetes-validate): kind -> apiVersion
CUSTOM_KINDS = {"PodMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1"}
#: objects the manifests reference but an operator creates (credentials stay out of git)
EXTERNAL_SECRETS = {"facenas-postgres", "facenas-tls", "facenas-api-token"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# host:port where the host is a name (has a letter): "1:8" (a MIN:MAX range) is not an address
ADDRESS = re.compile(r"^[a-z0-9-]*[a-z][a-z0-9.-]*:\d+$")
#: the exec probe of components/security: the kubelet's native gRPC probe speaks plaintext only
HEALTHCHECK = ["python", "-m", "facenas.rpc.healthcheck"]

Obj = dict[str, Any]
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: schema problem (or None) of each distinct object: most objects are the same in many renders
_VALIDATED: dict[str, str | None] = {}


def schema_problem(obj: Obj) -> str | None:
    """What the Kubernetes schema says about ``obj`` (strict), None when it passes; cached by content."""
    key = json.dumps(obj, sort_keys=True)
    if key not in _VALIDATED:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            _VALIDATED[key] = None
        except kubernetes_validate.ValidationError as err:
            _VALIDATED[key] = f"{ident(obj)} at {'.'.join(map(str, err.path))}: {err.message}"
    return _VALIDATED[key]


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Obj]]:
    """``render(name)``: the objects ``kubectl kustomize`` prints for one entry of RENDERS (cached)."""
    return renderer(tmp_path_factory.mktemp("kustomize"))


def renderer(workdir: Path) -> Callable[[str], list[Obj]]:
    """The ``render`` fixture's function, writing the kustomizations it makes under ``workdir``
    (tests/images renders with it too)."""
    cache: dict[str, list[Obj]] = {}

    def run(name: str) -> list[Obj]:
        if name not in cache:
            directory, components = RENDERS[name]
            if directory is None:
                directory = workdir / name
                directory.mkdir()
                # kustomize accepts only relative paths to other kustomizations
                kustomization = {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(K8S / "base", directory)],
                    "components": [os.path.relpath(K8S / "components" / c, directory) for c in components],
                }
                (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
            done = subprocess.run(
                [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
            cache[name] = [d for d in yaml.load_all(done.stdout, Loader=YAML_LOADER) if d]
        return cache[name]

    return run


# --- helpers ----------------------------------------------------------------------------------------


def ident(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def of_kind(objs: list[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objs if o["kind"] in kinds]


def pod_templates(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, its pod template) for every workload."""
    for obj in of_kind(objs, *WORKLOADS):
        yield obj, obj["spec"]["template"]


def containers(template: Obj) -> list[Obj]:
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A label selector (plain map, or matchLabels/matchExpressions) against a label set."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return all(labels.get(k) == v for k, v in selector.items())
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def selected_templates(objs: list[Obj], selector: Obj) -> list[Obj]:
    return [t for _, t in pod_templates(objs) if selects(selector, t["metadata"].get("labels", {}))]


def has_port(template: Obj, port: int | str) -> bool:
    """A container port of the pod, by number or by name."""
    ports = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
    return any(p["containerPort"] == port or p.get("name") == port for p in ports)


def image_service(image: str) -> tuple[str, Path]:
    """``facenas/<name>[:tag|@digest]`` -> (name, docker/Dockerfile, whose target <name> builds it);
    ``facenas/<name>-cuda`` is the CUDA variant, built from docker/<name>/Dockerfile.cuda."""
    repository = image.split("@")[0].rsplit(":", 1)[0].removeprefix("facenas/")
    service, cuda, _ = repository.partition("-cuda")
    return service, ROOT / "docker" / (f"{service}/Dockerfile.cuda" if cuda else "Dockerfile")


def probe_target(probe: Obj) -> tuple[int, str] | None:
    """(port, health service name) a probe asks: the kubelet's gRPC probe, or the exec probe running
    ``python -m facenas.rpc.healthcheck`` (parsed by its own parser); None for any other probe."""
    if "grpc" in probe:
        return int(probe["grpc"]["port"]), str(probe["grpc"].get("service", ""))
    command = probe.get("exec", {}).get("command", [])
    if command[: len(HEALTHCHECK)] != HEALTHCHECK:
        return None
    from facenas.rpc.healthcheck import parser

    args = parser().parse_args(command[len(HEALTHCHECK) :])
    return int(args.port), str(args.service)


def tls_on(env: dict[str, str]) -> bool:
    return bool(env.get("FACENAS_TLS_DIR") or env.get("FACENAS_TLS_CERT"))


def effective_env(objs: list[Obj], container: Obj) -> dict[str, str]:
    """Literal environment values of a container: envFrom ConfigMaps, then env (which wins)."""
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env.pop(var["name"], None)
    return env


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_every_object_passes_the_kubernetes_schema(render: Callable[[str], list[Obj]], name: str) -> None:
    objs = render(name)
    assert objs, f"{name} rendered nothing"
    problems = []
    for obj in objs:
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["apiVersion"] == CUSTOM_KINDS[obj["kind"]], ident(obj)
            continue
        problem = schema_problem(obj)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)
    assert of_kind(objs, "Namespace")[0]["metadata"]["name"] == "facenas"
    namespaced = [o for o in objs if o["kind"] != "Namespace"]
    assert all(o["metadata"].get("namespace") == "facenas" for o in namespaced), [
        ident(o) for o in namespaced if o["metadata"].get("namespace") != "facenas"
    ]


@pytest.mark.parametrize("name", RENDERS)
def test_services_select_pods_that_have_their_target_ports(
    render: Callable[[str], list[Obj]], name: str
) -> None:
    objs = render(name)
    for service in of_kind(objs, "Service"):
        templates = selected_templates(objs, service["spec"]["selector"])
        assert templates, f"{ident(service)} selects no pod template"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert all(has_port(t, target) for t in templates), f"{ident(service)}: no pod port {target}"
    for budget in of_kind(objs, "PodDisruptionBudget"):
        assert selected_templates(objs, budget["spec"]["selector"]), f"{ident(budget)} selects nothing"
    for monitor in of_kind(objs, "PodMonitor"):
        templates = selected_templates(objs, monitor["spec"]["selector"])
        assert templates, f"{ident(monitor)} selects no pod template"
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert all(has_port(t, endpoint["port"]) for t in templates), ident(monitor)
    for policy in of_kind(objs, "NetworkPolicy"):
        templates = selected_templates(objs, policy["spec"]["podSelector"])
        assert templates, f"{ident(policy)} applies to no pod"
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert all(has_port(t, port["port"]) for t in templates), f"{ident(policy)}: {port}"


@pytest.mark.parametrize("name", RENDERS)
def test_health_probes_check_a_declared_port(render: Callable[[str], list[Obj]], name: str) -> None:
    objs = render(name)
    for workload, template in pod_templates(objs):
        for container in template["spec"]["containers"]:
            declared = {p["containerPort"] for p in container.get("ports", [])}
            mtls = tls_on(effective_env(objs, container))
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                target = probe_target(probe) if probe else None
                if workload["kind"] == "Deployment":
                    assert target is not None, f"{ident(workload)}: no gRPC health {kind}"
                    # with mTLS on, the kubelet's plaintext gRPC probe would be refused: exec probes
                    assert ("exec" in probe) == mtls, f"{ident(workload)} {kind}: mTLS {mtls}"
                    if "exec" in probe:  # a Python process per probe: more than the 1 s default
                        assert probe.get("timeoutSeconds", 1) >= 3, f"{ident(workload)} {kind}"
                if target:
                    assert target[0] in declared, f"{ident(workload)} {kind}"
            if workload["kind"] != "Deployment":
                continue
            # the server listens where the probes look; readiness names a service that the server
            # registers with gRPC health (NOT_SERVING while a dependency is down: unready), startup and
            # liveness ask for LIVENESS, which stays SERVING while the process serves (not restarted);
            # native gRPC probes, or exec probes of facenas.rpc.healthcheck under mTLS
            port, service = probe_target(container["readinessProbe"]) or (0, "")
            assert effective_env(objs, container).get("FACENAS_PORT") == str(port)
            image = image_service(container["image"])[0]
            registered = set(importlib.import_module(f"services.{image}.server").GRPC_SERVICES)
            assert service in registered, f"{ident(workload)}: not one of {registered}"
            for kind in ("startupProbe", "livenessProbe"):
                other_port, other_service = probe_target(container[kind]) or (0, "")
                assert other_port == port, f"{ident(workload)} {kind}"
                assert other_service == LIVENESS, f"{ident(workload)} {kind}: not {LIVENESS!r}"


@pytest.mark.parametrize("name", RENDERS)
def test_service_addresses_in_facenas_env_exist(render: Callable[[str], list[Obj]], name: str) -> None:
    objs = render(name)
    services = {
        (s["metadata"]["name"], s["metadata"]["namespace"]): {p["port"] for p in s["spec"]["ports"]}
        for s in of_kind(objs, "Service")
    }
    checked = 0
    for workload, template in pod_templates(objs):
        for container in containers(template):
            for key, value in effective_env(objs, container).items():
                for address in (a.strip() for a in value.split(",")) if key.startswith("FACENAS_") else ():
                    address = address.removeprefix("dns:///")  # a headless Service: every pod a replica
                    if not ADDRESS.match(address):
                        continue
                    host, port = address.rsplit(":", 1)
                    parts = host.split(".")
                    assert len(parts) in (1, 2) or parts[2:] in (["svc"], ["svc", "cluster", "local"]), (
                        f"{ident(workload)} {key}={value}: {host} is not a Service name"
                    )
                    namespace = parts[1] if len(parts) > 1 else workload["metadata"]["namespace"]
                    ports = services.get((parts[0], namespace))
                    assert ports is not None, f"{ident(workload)} {key}: no Service {parts[0]}.{namespace}"
                    assert int(port) in ports, f"{ident(workload)} {key}: Service {parts[0]} has no {port}"
                    checked += 1
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in EXTERNAL_SECRETS | {
                        s["metadata"]["name"] for s in of_kind(objs, "Secret")
                    }
    assert checked >= 4, "the searcher should be given the store, trainer and latency addresses"


@pytest.mark.parametrize("name", RENDERS)
def test_volumes_and_config_refer_to_rendered_objects(render: Callable[[str], list[Obj]], name: str) -> None:
    objs = render(name)
    claims = {c["metadata"]["name"] for c in of_kind(objs, "PersistentVolumeClaim")}
    configmaps = {c["metadata"]["name"] for c in of_kind(objs, "ConfigMap")}
    accounts = {a["metadata"]["name"] for a in of_kind(objs, "ServiceAccount")}
    for workload, template in pod_templates(objs):
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        secrets = EXTERNAL_SECRETS | {o["metadata"]["name"] for o in of_kind(objs, "Secret")}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{ident(workload)}: {volume}"
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{ident(workload)}: {volume}"
        for container in containers(template):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{ident(workload)}: no volume {mount['name']}"
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, ident(workload)
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts, ident(workload)


@pytest.mark.parametrize("name", RENDERS)
def test_every_image_is_built_from_a_dockerfile_here(render: Callable[[str], list[Obj]], name: str) -> None:
    for workload, template in pod_templates(render(name)):
        for container in containers(template):
            image = container["image"]
            assert image.startswith("facenas/"), f"{ident(workload)}: {image} is not a facenas image"
            service, dockerfile = image_service(image)
            assert dockerfile.is_file(), f"{ident(workload)}: {image} has no {dockerfile.relative_to(ROOT)}"
            assert f'"services.{service}"' in dockerfile.read_text(), f"{dockerfile} runs another service"


@pytest.mark.parametrize("name", RENDERS)
def test_every_container_is_hardened_and_bounded(render: Callable[[str], list[Obj]], name: str) -> None:
    objs = render(name)
    rbac_subjects = {
        subject["name"]
        for binding in of_kind(objs, "RoleBinding")
        for subject in binding.get("subjects", [])
        if subject.get("kind") == "ServiceAccount"
    }
    for workload, template in pod_templates(objs):
        spec = template["spec"]
        where = ident(workload)
        # the API token is mounted only into pods whose service account RBAC grants something
        if spec.get("automountServiceAccountToken") is not False:
            assert spec.get("serviceAccountName") in rbac_subjects, (
                f"{where} mounts a token it has no use for"
            )
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, where
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for container in containers(template):
            security = container.get("securityContext", {})
            assert security.get("readOnlyRootFilesystem") is True, where
            assert "ALL" in security.get("capabilities", {}).get("drop", []), where
            assert security.get("capabilities", {}).get("add") is None, where
            if security.get("privileged"):
                # only the USB-attached Snapdragon profiler (components/snapdragon) may be privileged
                assert workload["metadata"]["name"] == "latency-snp", where
                assert "snapdragon" in RENDERS[name][1], where
            else:
                assert security.get("allowPrivilegeEscalation") is False, where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a read-only root filesystem needs a writable /tmp"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"
            ports = {p.get("name") for p in container.get("ports", [])}
            if workload["kind"] == "Deployment":
                assert "metrics" in ports, f"{where}: no port named metrics"


def test_store_keeps_its_sqlite_file_on_a_claim_unless_postgres(render: Callable[[str], list[Obj]]) -> None:
    for name in RENDERS:
        objs = render(name)
        store = next(d for d in of_kind(objs, "Deployment") if d["metadata"]["name"] == "store")
        env = {v["name"]: v for v in store["spec"]["template"]["spec"]["containers"][0]["env"]}
        postgres = "postgres" in RENDERS[name][1] or name == "overlay-production"
        if postgres:
            assert env["FACENAS_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "facenas-postgres"
            assert "facenas-store" not in {
                c["metadata"]["name"] for c in of_kind(objs, "PersistentVolumeClaim")
            }
        else:
            assert env["FACENAS_STORE_URL"]["value"].startswith("sqlite:////var/lib/facenas/store/")
            assert store["spec"]["replicas"] == 1 and store["spec"]["strategy"]["type"] == "Recreate"


def test_cpu_latency_pods_get_guaranteed_whole_cpus(render: Callable[[str], list[Obj]]) -> None:
    for name in ("base+cpu-latency", "overlay-production"):
        latency = next(
            d for d in of_kind(render(name), "Deployment") if d["metadata"]["name"] == "latency-cpu"
        )
        spec = latency["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
        for container in containers(latency["spec"]["template"]):
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], name
            assert re.fullmatch(r"[1-9][0-9]*", str(resources["limits"]["cpu"])), name


def test_monitoring_component_copies_are_current() -> None:
    """The component's dashboard and rules are `make manifests` copies of deploy/grafana and /prometheus."""
    component = K8S / "components" / "monitoring"
    dashboard = ROOT / "deploy" / "grafana" / "facenas-dashboard.json"
    assert (component / "facenas-dashboard.json").read_bytes() == dashboard.read_bytes(), (
        "run `make manifests`"
    )
    rule = yaml.safe_load((component / "prometheus-rule.yaml").read_text())
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == alerts["groups"], (
        "run `make manifests`"
    )


def test_monitoring_component_ships_dashboard_and_rules(render: Callable[[str], list[Obj]]) -> None:
    objs = render("base+monitoring")
    dashboards = [
        c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"] == "facenas-grafana-dashboard"
    ]
    assert dashboards and dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboards[0]["data"]["facenas-dashboard.json"])["panels"]
    assert of_kind(objs, "PrometheusRule")


#: the label kube-prometheus-stack's Prometheus selects PodMonitors and rules by (its default
#: podMonitorSelector / ruleSelector: matchLabels release: <Helm release>), and the component's default
RELEASE_LABEL = "release"
DEFAULT_RELEASE = "kube-prometheus-stack"
MONITORING_KINDS = ("PodMonitor", "PrometheusRule")


@pytest.mark.parametrize("name", [n for n in RENDERS if "monitoring" in n or n == "overlay-production"])
def test_monitoring_objects_carry_the_release_label(render: Callable[[str], list[Obj]], name: str) -> None:
    monitors = of_kind(render(name), *MONITORING_KINDS)
    assert len(of_kind(monitors, "PodMonitor")) == 5 and of_kind(monitors, "PrometheusRule")
    unlabelled = [ident(m) for m in monitors if m["metadata"]["labels"].get(RELEASE_LABEL) != DEFAULT_RELEASE]
    assert not unlabelled, f"without {RELEASE_LABEL}: {DEFAULT_RELEASE}: {unlabelled}"


@pytest.mark.integration
def test_an_overlay_sets_its_own_release_label(tmp_path: Path) -> None:
    """The override documented in components/monitoring/kustomization.yaml, in an overlay of production."""
    documented = (K8S / "components" / "monitoring" / "kustomization.yaml").read_text()
    patch = '[{"op": "replace", "path": "/metadata/labels/release", "value": "<your release>"}]'
    assert f"patch: '{patch}'" in documented
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "production", tmp_path)],
        "patches": [
            {"target": {"group": "monitoring.coreos.com"}, "patch": patch.replace("<your release>", "prom")}
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    objs = [d for d in yaml.load_all(done.stdout, Loader=YAML_LOADER) if d]
    monitors = of_kind(objs, *MONITORING_KINDS)
    assert len(monitors) == 6
    assert {m["metadata"]["labels"][RELEASE_LABEL] for m in monitors} == {"prom"}
    # only the monitoring objects: the release label is not the whole deployment's
    assert all(RELEASE_LABEL not in o["metadata"].get("labels", {}) for o in objs if o not in monitors)


# --- the dataset volume and its data cache ------------------------------------------------------------------

DATASET_CLAIM = "facenas-dataset"
#: the search whose training size each render's dataset-prepare Job caches
SEARCH_CONFIG = {"overlay-local": "demo_search.yaml"}  # every other render: cpu_search.yaml


def search_img_size(name: str) -> str:
    config = yaml.safe_load(
        (ROOT / "facenas" / "configs" / SEARCH_CONFIG.get(name, "cpu_search.yaml")).read_text()
    )
    width, height = config["search"]["search_space"]["params"]["img_size"]
    return f"{width}x{height}"


def prepare_command(objs: list[Obj]) -> tuple[Obj, Obj, list[str]]:
    """The dataset-prepare Job, its prepare container and its command with $(VAR)s expanded."""
    (job,) = [j for j in of_kind(objs, "Job") if j["metadata"]["name"] == "dataset-prepare"]
    (container,) = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "prepare"]
    env = effective_env(objs, container)
    command = [
        re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in container["command"]
    ]
    return job, container, command


def dataset_mounts(template: Obj, container: Obj) -> list[Obj]:
    """The container's mounts of the facenas-dataset claim (with the volume's readOnly folded in)."""
    volumes = {
        v["name"]: v["persistentVolumeClaim"]
        for v in template["spec"].get("volumes", [])
        if v.get("persistentVolumeClaim", {}).get("claimName") == DATASET_CLAIM
    }
    return [
        {**m, "readOnly": bool(m.get("readOnly")) or bool(volumes[m["name"]].get("readOnly"))}
        for m in container.get("volumeMounts", [])
        if m["name"] in volumes
    ]


@pytest.mark.parametrize("name", RENDERS)
def test_dataset_prepare_job_caches_the_search_size_on_the_dataset_volume(
    render: Callable[[str], list[Obj]], name: str
) -> None:
    objs = render(name)
    job, container, command = prepare_command(objs)
    assert command[:3] == ["facenas", "data", "prepare"], command
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options["--img-size"] == search_img_size(name)
    # one decoding process per CPU of the container's own limit
    assert options["--workers"] == "$(FACENAS_PREPARE_WORKERS)"
    (workers,) = [v for v in container["env"] if v["name"] == "FACENAS_PREPARE_WORKERS"]
    assert workers["valueFrom"]["resourceFieldRef"] == {
        "containerName": "prepare",
        "resource": "limits.cpu",
        "divisor": "1",
    }
    # the Job writes the cache into the dataset volume at the path it names
    (mount,) = dataset_mounts(job["spec"]["template"], container)
    assert not mount["readOnly"] and mount["mountPath"] == options["--dataset-dir"]
    # every reader mounts the same volume read-only where FACENAS_DATASET_DIR says
    readers = 0
    for workload, template in pod_templates(objs):
        if workload is job:
            continue
        for reader in containers(template):
            for read in dataset_mounts(template, reader):
                assert read["readOnly"], f"{ident(workload)} mounts the dataset read-write"
                assert read["mountPath"] == options["--dataset-dir"], ident(workload)
                assert effective_env(objs, reader).get("FACENAS_DATASET_DIR") == read["mountPath"]
                readers += 1
    assert readers >= 2, "trainer and latency_snp read the dataset"


def test_local_overlay_generates_faces_before_preparing_the_cache(render: Callable[[str], list[Obj]]) -> None:
    objs = render("overlay-local")
    job, container, _ = prepare_command(objs)
    template = job["spec"]["template"]
    (synth,) = template["spec"]["initContainers"]  # runs to completion before the prepare container
    assert "generate_dataset(" in synth["command"][-1]
    (mount,) = dataset_mounts(template, synth)
    assert not mount["readOnly"] and mount["mountPath"] == dataset_mounts(template, container)[0]["mountPath"]
    assert [ident(j) for j in of_kind(objs, "Job")] == ["Job/dataset-prepare"]


@pytest.mark.parametrize("name", ["overlay-local", "overlay-production"])
def test_dataset_prepare_command_runs(render: Callable[[str], list[Obj]], name: str, tmp_path: Path) -> None:
    """The rendered command line, run by the real CLI on a small dataset at the Job's path and size."""
    from typer.testing import CliRunner

    from facenas.cli.main import app
    from facenas.data import generate_dataset

    _, _, command = prepare_command(render(name))
    options = dict(zip(command[3::2], command[4::2], strict=True))
    dataset = tmp_path / options["--dataset-dir"].strip("/")
    generate_dataset(dataset, 3, size=64, seed=0)
    args = [
        *command[1:3],
        "--dataset-dir",
        str(dataset),
        "--img-size",
        options["--img-size"],
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cache_dir"] == str(dataset / ".facenas-cache" / options["--img-size"])


# --- the security component: mTLS everywhere, the searcher's API token ------------------------------------

TLS_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def secret_mounts(template: Obj, container: Obj) -> dict[str, tuple[str, set[str] | None, bool]]:
    """mount path -> (Secret name, the keys it projects (None = all), readOnly) of the container."""
    volumes = {v["name"]: v["secret"] for v in template["spec"].get("volumes", []) if "secret" in v}
    return {
        m["mountPath"]: (
            volumes[m["name"]]["secretName"],
            {i["path"] for i in volumes[m["name"]]["items"]} if "items" in volumes[m["name"]] else None,
            bool(m.get("readOnly")),
        )
        for m in container.get("volumeMounts", [])
        if m["name"] in volumes
    }


@pytest.mark.parametrize("name", RENDERS)
def test_security_component_turns_mtls_on_for_every_service(
    render: Callable[[str], list[Obj]], name: str
) -> None:
    """Off by default; with components/security every Deployment mounts the facenas-tls Secret where
    FACENAS_TLS_DIR says (what facenas.rpc.security reads: tls.crt, tls.key, ca.crt), clients check
    FACENAS_TLS_SERVER_NAME, and the searcher alone reads the API token from the facenas-api-token
    Secret."""
    objs = render(name)
    on = "security" in RENDERS[name][1]
    for workload, template in pod_templates(objs):
        if workload["kind"] != "Deployment":
            continue
        where = ident(workload)
        for container in template["spec"]["containers"]:
            env = effective_env(objs, container)
            assert tls_on(env) == on, where
            token_file = env.get("FACENAS_API_TOKEN_FILE")
            if not on:
                assert token_file is None and "FACENAS_API_TOKEN" not in env, where
                continue
            assert env.get("FACENAS_TLS_SERVER_NAME"), where
            mounts = secret_mounts(template, container)
            assert mounts.get(env["FACENAS_TLS_DIR"]) == ("facenas-tls", None, True), f"{where}: {mounts}"
            assert "FACENAS_API_TOKEN" not in env, f"{where}: a token in the environment (use the file)"
            if workload["metadata"]["name"] == "searcher":
                directory, _, file = str(token_file).rpartition("/")
                assert mounts.get(directory) == ("facenas-api-token", {file}, True), f"{where}: {mounts}"
            else:
                assert token_file is None, where


def test_security_component_documents_the_secret_keys() -> None:
    """The Secret's keys are the file names facenas.rpc.security reads from a --tls-dir."""
    from facenas.rpc import security

    assert {security.DIR_CERT, security.DIR_KEY, security.DIR_CA} == TLS_KEYS
    text = (K8S / "components" / "security" / "kustomization.yaml").read_text()
    assert all(f"--from-file={key}=" in text for key in TLS_KEYS) and "facenas-api-token" in text
