"""The Helm chart, linted and rendered by Helm's own Go SDK (helm-python-sdk), and the container
files: manifests are valid Kubernetes objects and agree with what the services really read."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from lmrc.annotator.service import AnnotatorSettings
from lmrc.classifier.service import ClassifierSettings
from lmrc.cli import build_parser
from lmrc.paths import REPO_ROOT
from lmrc.proposer.service import ProposerSettings
from lmrc.runtime import KafkaSettings
from lmrc.sink.settings import SinkSettings
from lmrc.topology import TOPICS

REPO = REPO_ROOT
CHART = REPO / "deploy" / "helm" / "lmrc"
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes the chart is validated against (schemas ship offline)
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
SETTINGS: dict[str, type[BaseSettings]] = {
    "KAFKA_": KafkaSettings,
    "ANNOTATOR_": AnnotatorSettings,
    "PROPOSER_": ProposerSettings,
    "CLASSIFIER_": ClassifierSettings,
    "SINK_": SinkSettings,
}
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
GPU_VALUES = yaml.safe_load((CHART / "values-gpu.yaml").read_text())
# Every optional part on: SASL over TLS with client certificates, credentials written by the chart,
# models from volumes, the embedded graph on a claim, autoscaling, monitoring objects.
EVERYTHING_VALUES: dict[str, Any] = {
    "kafka": {
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "tls": {"secretName": "kafka-ca", "clientCertificate": True},
    },
    "credentials": {
        "kafkaSaslUsername": "lmrc",
        "kafkaSaslPassword": "s3cret",
        "tgiApiToken": "hf_token",
        "falkordbPassword": "pw",
    },
    "proposer": {
        "modelVolume": {"persistentVolumeClaim": {"claimName": "models"}},
        "recallTarget": "0.9",
        "env": {"max_batch_wait_seconds": "0.2"},
        "autoscaling": {"enabled": True},
        "ensemble": {
            "members": [
                {"volume": {"persistentVolumeClaim": {"claimName": "selftrain"}}},
                {"volume": {"persistentVolumeClaim": {"claimName": "models"}}, "subPath": "minilm"},
            ],
            "weight": 0.6,
        },
    },
    "classifier": {
        "modelVolume": {"configMap": {"name": "classifier-json"}},
        "autoscaling": {"enabled": True},
    },
    "sink": {
        "store": {"backend": "ladybug", "ladybug": {"persistentVolumeClaim": "graph"}},
        "replicaCount": 3,
    },
    "tgi": {"enabled": True, "modelVolume": {"persistentVolumeClaim": {"claimName": "llm"}}},
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboards": {"enabled": True},
}
CREDENTIAL_FILES_VALUES: dict[str, Any] = {
    **EVERYTHING_VALUES,
    "credentials": {**EVERYTHING_VALUES["credentials"], "asFiles": True},
}
VALUE_SETS = {
    "default": {},
    "gpu": GPU_VALUES,
    "everything": EVERYTHING_VALUES,
    "credential-files": CREDENTIAL_FILES_VALUES,
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name="demo", namespace="lmrc", is_install=True)
    documents: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".txt"):
            continue
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(deployment).get("env", [])}


def service_deployments(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """proposer, classifier, sink -> Deployment."""
    deployments = of_kind(documents, "Deployment")
    return {
        name.removeprefix("demo-lmrc-"): d for name, d in deployments.items() if not name.endswith("-tgi")
    }


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(VALUE_SETS[request.param])


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_chart_lints_without_warnings(values_name: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[values_name], strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_rendered_manifests_are_valid_kubernetes_objects(rendered: list[dict[str, Any]]) -> None:
    builtin = [doc for doc in rendered if doc["kind"] not in CUSTOM_KINDS]
    assert {"Deployment", "Service", "PodDisruptionBudget", "Job"} <= {doc["kind"] for doc in builtin}
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_every_variable_the_chart_sets_is_a_setting_the_service_reads(rendered: list[dict[str, Any]]) -> None:
    for name, deployment in service_deployments(rendered).items():
        prefix = f"{name.upper()}_"
        for variable in env_of(deployment):
            if variable == "LMRC_SECRETS_DIR":  # where every settings class looks for secret files
                continue
            owner = next((p for p in SETTINGS if variable.startswith(p)), None)
            assert owner in ("KAFKA_", prefix), f"{name} gets {variable}, read by no settings of its own"
            fields = SETTINGS[owner].model_fields
            assert variable.removeprefix(owner).lower() in fields, f"{variable} is not a {owner}* setting"


def test_settings_in_the_chart_parse_as_the_service_would(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Literal values, put in the environment, build the services' own settings classes as the
    services do at start (types, enums, ranges, JSON lists)."""
    for name, deployment in service_deployments(rendered).items():
        literal = {k: e["value"] for k, e in env_of(deployment).items() if "value" in e}
        literal.pop("LMRC_SECRETS_DIR", None)  # files that exist in the pod only
        with monkeypatch.context() as environment:
            for variable in [v for v in os.environ if v.startswith(tuple(SETTINGS))]:
                environment.delenv(variable)
            for variable, value in literal.items():
                environment.setenv(variable, value)
            settings = SETTINGS[f"{name.upper()}_"]()
        assert settings.http_port == container(deployment)["ports"][0]["containerPort"]
        assert settings.service_name == name


def test_default_values_need_no_gpu_and_gpu_values_put_the_proposer_on_one() -> None:
    default = service_deployments(render({}))["proposer"]
    assert "nvidia.com/gpu" not in container(default)["resources"].get("limits", {})
    assert env_of(default)["PROPOSER_EXECUTION_PROVIDER"]["value"] == "cpu"

    gpu = service_deployments(render(GPU_VALUES))["proposer"]
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_of(gpu)["PROPOSER_EXECUTION_PROVIDER"]["value"] == "cuda"
    pod = gpu["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Only the proposer (and TGI) hold GPUs.
    for name in ("classifier", "sink"):
        assert (
            "nvidia.com/gpu"
            not in container(service_deployments(render(GPU_VALUES))[name])["resources"]["limits"]
        )


def test_classifier_talks_to_the_tgi_the_chart_runs_or_to_an_external_one() -> None:
    external = render({"classifier": {"tgi": {"url": "https://tgi.example:8443"}}})
    assert (
        env_of(service_deployments(external)["classifier"])["CLASSIFIER_TGI_URL"]["value"]
        == "https://tgi.example:8443"
    )
    assert "demo-lmrc-tgi" not in of_kind(external, "Deployment")

    inside = render(GPU_VALUES)
    tgi = of_kind(inside, "Deployment")["demo-lmrc-tgi"]
    service = of_kind(inside, "Service")["demo-lmrc-tgi"]
    assert (
        env_of(service_deployments(inside)["classifier"])["CLASSIFIER_TGI_URL"]["value"]
        == "http://demo-lmrc-tgi:80"
    )
    assert service["spec"]["selector"].items() <= tgi["spec"]["template"]["metadata"]["labels"].items()
    assert container(tgi)["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = container(tgi)["args"]
    adapter = env_of(service_deployments(inside)["classifier"])["CLASSIFIER_TGI_ADAPTER_ID"]["value"]
    assert any(a.startswith(f"--lora-adapters={adapter}=") for a in args), args


def test_probes_hit_the_health_endpoints_on_the_metrics_port(rendered: list[dict[str, Any]]) -> None:
    for deployment in service_deployments(rendered).values():
        main = container(deployment)
        assert main["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert main["securityContext"]["readOnlyRootFilesystem"] is True


def test_chart_topics_are_the_pipeline_topology() -> None:
    """The chart's default topic names are the ones the services and the CLI default to."""
    topics = VALUES["topics"]
    assert (topics["documents"], topics["candidates"], topics["relations"]) == (
        TOPICS.documents,
        TOPICS.candidates,
        TOPICS.relations,
    )


def test_topic_job_creates_every_topic_the_services_use(rendered: list[dict[str, Any]]) -> None:
    (job,) = of_kind(rendered, "Job").values()
    args = container(job)["args"]
    parsed = build_parser().parse_args([*container(job)["command"][1:], *args])  # our own CLI accepts them
    used = {
        entry["value"]
        for deployment in service_deployments(rendered).values()
        for name, entry in env_of(deployment).items()
        if name.endswith(("_INPUT_TOPIC", "_OUTPUT_TOPIC", "_DEAD_LETTER_TOPIC"))
    }
    assert set(parsed.topic) == used == set(TOPICS.all)
    create = VALUES["topics"]["create"]
    assert parsed.compact and parsed.tombstone_retention_ms == create["tombstoneRetentionMs"]
    assert parsed.partitions >= max(
        d["spec"].get("replicas", 1) for d in service_deployments(rendered).values()
    )
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    sink = service_deployments(rendered)["sink"]
    files = [  # credentials the services read as files (credentials.asFiles), the Job as variables
        item["path"]
        for volume in sink["spec"]["template"]["spec"]["volumes"]
        if volume["name"] == "credentials"
        for item in volume["secret"]["items"]
    ]
    assert env_of(job).keys() == {k for k in [*env_of(sink), *files] if k.startswith("KAFKA_")}


def test_credentials_come_from_the_secret_the_chart_writes() -> None:
    """The services read an ordinary Secret (helm uninstall removes it; before, the only Secret was a
    hook and outlived the release); the topic Job, a pre-install hook, reads a hook copy of the Kafka
    credentials alone, made before it and deleted after it whatever its outcome."""
    documents = render(EVERYTHING_VALUES)
    secrets = of_kind(documents, "Secret")
    ordinary = next(s for s in secrets.values() if "helm.sh/hook" not in s["metadata"].get("annotations", {}))
    hook = next(s for s in secrets.values() if s is not ordinary)
    annotations = hook["metadata"]["annotations"]
    assert annotations["helm.sh/hook-weight"] == "-10"  # before the topic Job
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
        "hook-failed",
    }
    assert set(hook["stringData"]) == {"kafka-sasl-username", "kafka-sasl-password"}
    references = [
        (name, entry["valueFrom"]["secretKeyRef"])
        for name, deployment in [*service_deployments(documents).items(), *of_kind(documents, "Job").items()]
        for entry in env_of(deployment).values()
        if "valueFrom" in entry
    ]
    # The embedded graph store (these values) takes no credentials: no falkordb-* references.
    keys = {r["key"] for _, r in references}
    assert keys == {"kafka-sasl-username", "kafka-sasl-password", "tgi-api-token"}
    jobs = set(of_kind(documents, "Job"))
    for name, reference in references:
        secret = hook if name in jobs else ordinary
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"] or reference["optional"] is True
    sasl = [r for _, r in references if r["key"].startswith("kafka-")]
    assert sasl and all(r["optional"] is False for r in sasl)


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_no_pod_gets_a_service_account_token_or_runs_without_a_security_context(values_name: str) -> None:
    documents = render(VALUE_SETS[values_name])
    pods = [
        (name, workload["spec"]["template"]["spec"])
        for kind in ("Deployment", "Job")
        for name, workload in of_kind(documents, kind).items()
    ]
    assert pods
    for name, pod in pods:
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_network_policies_open_only_the_metrics_ports_and_tgi_to_the_classifier() -> None:
    documents = render(EVERYTHING_VALUES)
    policies = of_kind(documents, "NetworkPolicy")
    selected = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p for p in policies.values()
    }
    assert set(selected) == {"annotator", "proposer", "classifier", "sink", "tgi"}
    for component in ("annotator", "proposer", "classifier", "sink"):
        (rule,) = selected[component]["spec"]["ingress"]
        assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (tgi_rule,) = selected["tgi"]["spec"]["ingress"]
    (peer,) = tgi_rule["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "classifier"
    # Every policy selects the pods of its Deployment.
    deployments = of_kind(documents, "Deployment").values()
    for component, policy in selected.items():
        labels = policy["spec"]["podSelector"]["matchLabels"]
        assert any(d["spec"]["template"]["metadata"]["labels"] == labels for d in deployments), component
    scrapers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    scoped_values = {**EVERYTHING_VALUES, "networkPolicy": {"metricsFrom": scrapers}}
    scoped = of_kind(render(scoped_values), "NetworkPolicy")
    for policy in scoped.values():
        (rule,) = policy["spec"]["ingress"]
        assert scrapers[0] in rule["from"]
    assert of_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == {}


def test_credentials_as_files_are_mounted_where_the_settings_read_them(tmp_path: Path) -> None:
    """``credentials.asFiles``: no credential in any service's environment; the Secret mounted
    read-only under the names the settings read, which they do read (a real process)."""
    documents = render(CREDENTIAL_FILES_VALUES)
    secret_name = next(
        name
        for name, secret in of_kind(documents, "Secret").items()
        if "helm.sh/hook" not in secret["metadata"].get("annotations", {})
    )
    files: set[str] = set()
    for name, deployment in service_deployments(documents).items():
        env = env_of(deployment)
        assert not [k for k, entry in env.items() if "valueFrom" in entry], name
        mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
        volume = next(
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "credentials"
        )
        assert mounts["credentials"]["readOnly"] is True
        assert env["LMRC_SECRETS_DIR"]["value"] == mounts["credentials"]["mountPath"]
        assert volume["secret"]["secretName"] == secret_name
        files |= {item["path"] for item in volume["secret"]["items"]}
    for job in of_kind(documents, "Job").values():  # the hook Job keeps its environment
        assert "KAFKA_SASL_PASSWORD" in env_of(job)
    for file_name in files:
        (tmp_path / file_name).write_text(f"from-{file_name}", encoding="utf-8")
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lmrc.classifier.service import ClassifierSettings; from lmrc.sink.settings import "
            "SinkSettings; c, s = ClassifierSettings(), SinkSettings(); print(c.kafka.sasl_username, "
            "c.kafka.sasl_password.get_secret_value(), c.tgi_api_token.get_secret_value(), "
            "s.falkordb_username, s.falkordb_password.get_secret_value())",
        ],
        env={"PATH": "/usr/bin:/bin", "LMRC_SECRETS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert read == [
        "from-KAFKA_SASL_USERNAME",
        "from-KAFKA_SASL_PASSWORD",
        "from-CLASSIFIER_TGI_API_TOKEN",
        "from-SINK_FALKORDB_USERNAME",
        "from-SINK_FALKORDB_PASSWORD",
    ]


def test_an_existing_secret_is_referenced_and_none_is_written() -> None:
    documents = render(
        {
            "credentials": {"existingSecret": "lmrc-prod"},
            "kafka": {"saslMechanism": "PLAIN", "securityProtocol": "SASL_SSL"},
        }
    )
    assert of_kind(documents, "Secret") == {}
    proposer = env_of(service_deployments(documents)["proposer"])
    assert proposer["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "lmrc-prod"
    assert proposer["KAFKA_SASL_MECHANISM"]["value"] == "PLAIN"


def test_kafka_tls_files_are_mounted_where_the_settings_point() -> None:
    proposer = service_deployments(render(EVERYTHING_VALUES))["proposer"]
    mounts = {m["name"]: m["mountPath"] for m in container(proposer)["volumeMounts"]}
    volumes = {v["name"]: v for v in proposer["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-ca"
    for variable in ("KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION"):
        assert env_of(proposer)[variable]["value"].startswith(mounts["kafka-tls"] + "/")


def test_ensemble_members_are_mounted_where_the_proposer_looks_for_them() -> None:
    proposer = service_deployments(render(EVERYTHING_VALUES))["proposer"]
    mounts = {m["mountPath"]: m for m in container(proposer)["volumeMounts"]}
    volumes = {v["name"]: v for v in proposer["spec"]["template"]["spec"]["volumes"]}
    env = env_of(proposer)
    members = json.loads(env["PROPOSER_ENSEMBLE"]["value"])
    assert len(members) == 2
    for member, claim in zip(members, ("selftrain", "models"), strict=True):
        mount = mounts[member]
        assert mount["readOnly"] and volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
    assert mounts[members[1]]["subPath"] == "minilm"
    assert env["PROPOSER_ENSEMBLE_WEIGHT"]["value"] == "0.6"
    assert env["PROPOSER_RELATION_THRESHOLD"]["value"] == "0.45"
    default = env_of(service_deployments(render({}))["proposer"])
    assert "PROPOSER_ENSEMBLE" not in default and "PROPOSER_RELATION_THRESHOLD" not in default


def test_embedded_graph_runs_one_sink_on_its_claim() -> None:
    sink = service_deployments(render(EVERYTHING_VALUES))["sink"]
    assert sink["spec"]["replicas"] == 1 and sink["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in sink["spec"]["template"]["spec"]["volumes"]}
    assert volumes["graph"]["persistentVolumeClaim"]["claimName"] == "graph"
    mounts = {m["name"]: m["mountPath"] for m in container(sink)["volumeMounts"]}
    assert env_of(sink)["SINK_LADYBUG_PATH"]["value"].startswith(mounts["graph"] + "/")


def test_disruption_budgets_select_their_deployments(rendered: list[dict[str, Any]]) -> None:
    budgets = of_kind(rendered, "PodDisruptionBudget")
    for name, deployment in service_deployments(rendered).items():
        budget = budgets[f"demo-lmrc-{name}"]
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_scaled_objects_watch_each_service_group_and_input_topic() -> None:
    documents = render(EVERYTHING_VALUES)
    scaled = of_kind(documents, "ScaledObject")
    deployments = service_deployments(documents)
    assert set(scaled) == {"demo-lmrc-proposer", "demo-lmrc-classifier"}
    for name, scaled_object in scaled.items():
        deployment = of_kind(documents, "Deployment")[name]
        assert "replicas" not in deployment["spec"]  # KEDA owns the replica count
        component = name.removeprefix("demo-lmrc-")
        env = env_of(deployments[component])
        (trigger,) = scaled_object["spec"]["triggers"]
        prefix = component.upper()
        assert scaled_object["spec"]["scaleTargetRef"]["name"] == name
        assert trigger["metadata"]["consumerGroup"] == env[f"{prefix}_GROUP_ID"]["value"]
        assert trigger["metadata"]["topic"] == env[f"{prefix}_INPUT_TOPIC"]["value"]
        assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
        assert trigger["authenticationRef"]["name"] in of_kind(documents, "TriggerAuthentication")
        (job,) = of_kind(documents, "Job").values()
        job_command = container(job)["command"][1:] + container(job)["args"]
        partitions = build_parser().parse_args(job_command).partitions
        assert scaled_object["spec"]["maxReplicaCount"] <= partitions  # idle replicas beyond it


def test_service_monitor_scrapes_every_service_and_keeps_their_service_label() -> None:
    documents = render(EVERYTHING_VALUES)
    (monitor,) = of_kind(documents, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s
        for s in of_kind(documents, "Service").values()
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["name"] for s in selected} == {
        "demo-lmrc-annotator",
        "demo-lmrc-proposer",
        "demo-lmrc-classifier",
        "demo-lmrc-sink",
        "demo-lmrc-tgi",
    }
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for service in selected:
        assert endpoint_ports & {p["name"] for p in service["spec"]["ports"]}
    lmrc_endpoint = next(e for e in monitor["spec"]["endpoints"] if e["port"] == "metrics")
    assert lmrc_endpoint["honorLabels"] is True


def test_prometheus_rule_and_dashboards_carry_the_files_unchanged() -> None:
    documents = render(EVERYTHING_VALUES)
    (rule,) = of_kind(documents, "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    configmaps = of_kind(documents, "ConfigMap")
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        (configmap,) = [c for c in configmaps.values() if path.name in c["data"]]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())


def test_yaml_files_pass_yamllint() -> None:
    """Templates are Go templates, not YAML; everything else under deploy/ is linted."""
    files = [p for p in (REPO / "deploy").rglob("*.y*ml") if "templates" not in p.parts]
    assert len(files) >= 5
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(REPO / ".yamllint.yaml"), *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- container files -------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("service", ["annotator", "proposer", "classifier", "sink"])
def test_container_file_runs_the_service_as_a_non_root_user(service: str) -> None:
    instructions = dockerfile_instructions(REPO / "deploy" / "containers" / f"{service}.Dockerfile")
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [args for op, args in final_stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    (entrypoint,) = [json.loads(args) for op, args in final_stage if op == "ENTRYPOINT"]
    scripts = _pyproject_scripts()
    assert entrypoint == [f"lmrc-{service}"] and f"lmrc-{service}" in scripts
    assert ("EXPOSE", "9100") in final_stage
    for op, args in instructions:
        if op == "COPY" and "--from" not in args:
            source = args.split()[0]
            if "$" not in source:
                assert (REPO / source).exists(), f"{service}: COPY {source} names nothing in the repository"
    env = " ".join(args for op, args in final_stage if op == "ENV")
    settings_class = SETTINGS[f"{service.upper()}_"]
    for variable in re.findall(rf"\b({service.upper()}_\w+)=", env):
        assert variable.removeprefix(f"{service.upper()}_").lower() in settings_class.model_fields


def test_proposer_image_is_cuda_based_with_onnxruntime_gpu() -> None:
    text = (REPO / "deploy" / "containers" / "proposer.Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_BASE=nvidia/cuda:[\w.-]*cudnn[\w.-]*runtime", text, re.M)
    assert "pip uninstall -y onnxruntime" in text and '"onnxruntime-gpu>=1.18"' in text
    assert (
        "ARG MODEL_DIR=models/proposer" in text and (REPO / "models" / "proposer" / "proposer.json").exists()
    )


def test_build_context_keeps_what_the_images_copy() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert not ignored & {"models", "lmrc", "pyproject.toml", "README.md"}


def _pyproject_scripts() -> dict[str, str]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_proposer_pod_fits_the_worst_document_its_limits_admit() -> None:
    """`lmrc proposer memory` measured the peak RSS of the worst admitted document with the
    service's default limits; the chart's memory limit leaves room above it."""
    from lmrc.proposer.service import ProposerSettings

    figures = json.loads((REPO / "docs" / "results" / "proposer-memory.json").read_text())
    defaults = ProposerSettings()
    assert figures["limits"] == {
        "max_document_tokens": defaults.max_document_tokens,
        "max_entities": defaults.max_entities,
        "max_mention_slots": defaults.max_mention_slots,
        "pair_budget_bytes": defaults.pair_budget_bytes,
    }
    limit = VALUES["proposer"]["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert figures["peak_rss_mib"] * 1.2 <= int(limit[:-2]) * 1024


@pytest.mark.parametrize("stage", ["annotator", "classifier", "sink"])
def test_each_pod_fits_the_worst_input_its_limits_admit(stage: str) -> None:
    """`lmrc memory` measured each stage's peak RSS on the worst inputs its limits admit (the
    annotator at 100,000 characters took 5.4 GB against 2 Gi; the sink 6.5 GB for a consume of
    large relation sets): the chart's limit holds it with a fifth to spare, measured against the
    limits the service has today (a changed limit needs a new measurement)."""
    from lmrc.contracts import MAX_TEXT_CHARS
    from lmrc.local.memory import chart_limit_mib
    from lmrc.runtime import ServiceSettings

    figures = json.loads((REPO / "docs" / "results" / f"{stage}-memory.json").read_text())
    assert figures["errors"] == [] and len(figures["cases"]) >= 1
    assert figures["limit_mib"] == chart_limit_mib(stage)
    assert figures["peak_rss_mib"] * 1.2 <= chart_limit_mib(stage)
    if stage == "annotator":
        assert {case["characters"] for case in figures["cases"]} == {MAX_TEXT_CHARS}
    if stage == "sink":
        assert {case["max_batch_bytes"] for case in figures["cases"]} == {ServiceSettings().max_batch_bytes}


def test_a_model_bundle_volume_is_served_by_every_model_stage() -> None:
    """`modelBundle.volume`: the annotator, proposer and classifier mount the bundle and read it
    through their own *_MODELS setting; the sink has no model and gets neither."""
    deployments = service_deployments(
        render({"modelBundle": {"volume": {"persistentVolumeClaim": {"claimName": "cdr"}}, "subPath": "cdr"}})
    )
    for name in ("annotator", "proposer", "classifier"):
        mounts = {m["name"]: m for m in container(deployments[name])["volumeMounts"]}
        volumes = {v["name"]: v for v in deployments[name]["spec"]["template"]["spec"]["volumes"]}
        assert volumes["model-bundle"]["persistentVolumeClaim"]["claimName"] == "cdr"
        assert mounts["model-bundle"]["subPath"] == "cdr" and mounts["model-bundle"]["readOnly"]
        variable = f"{name.upper()}_MODELS"
        assert env_of(deployments[name])[variable]["value"] == mounts["model-bundle"]["mountPath"]
        assert "models" in SETTINGS[f"{name.upper()}_"].model_fields
    assert not any(k.endswith("_MODELS") for k in env_of(deployments["sink"]))
