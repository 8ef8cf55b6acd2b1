#!/usr/bin/env python3
"""Consistency checks for the deployment artefacts that the schema validators cannot express.

Called by deploy/check.sh with the validators' virtualenv (PyYAML comes with it). Each subcommand prints one
line per problem and exits 1 if there was any:

  k8s-policy [--whole] [--external-secrets] FILE...  rendered manifests keep the security, probe and wiring rules
  cfn-params TEMPLATE PARAMS.json...                  parameter files fit the template, its Rules included
  workflow-scripts OUTDIR WORKFLOW...                 writes each `run:` block as a bash file for shellcheck
  compose-mounts COMPOSE_FILE                         every bind-mounted file of the compose file exists
  dashboard SOURCE_DIR DASHBOARD.json...              every query parses as PromQL and names only metrics that
                                                      the code (or RabbitMQ's prometheus plugin) exports
"""

import argparse
import json
import os
import re
import sys

import yaml

PROBLEMS = []


def problem(message):
    PROBLEMS.append(message)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --- Kubernetes ------------------------------------------------------------------------------------------


def selects(selector, labels):
    """True when a matchLabels-only selector (the only kind used here) matches the labels."""
    match = (selector or {}).get("matchLabels", selector or {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def image_pinned(image):
    name = image.rsplit("/", 1)[-1]
    if "@sha256:" in image:
        return True
    return ":" in name and not name.endswith(":latest")


def check_container(where, c, configmaps, secrets, external_secrets):
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(f"{where}: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(f"{where}: allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(f"{where}: capabilities must drop ALL")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problem(f"{where}: resources.{kind}.{r} missing")
    if not image_pinned(c.get("image", "")):
        problem(f"{where}: image {c.get('image')!r} has no tag or digest (or uses latest)")
    for ref in c.get("envFrom") or []:
        if "configMapRef" in ref and ref["configMapRef"]["name"] not in configmaps:
            problem(f"{where}: ConfigMap {ref['configMapRef']['name']} is not rendered")
        if "secretRef" in ref and not external_secrets and ref["secretRef"]["name"] not in secrets:
            problem(f"{where}: Secret {ref['secretRef']['name']} is not rendered")


def check_pod(where, pod, configmaps, secrets, external_secrets):
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        problem(f"{where}: pod runAsNonRoot must be true")
    if not isinstance(psc.get("runAsUser"), int) or psc.get("runAsUser") <= 0:
        problem(f"{where}: pod runAsUser must be a numeric non-root user")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(f"{where}: pod seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problem(f"{where}: automountServiceAccountToken must be false")
    for c in (pod.get("initContainers") or []) + pod.get("containers", []):
        check_container(f"{where} container {c['name']}", c, configmaps, secrets, external_secrets)


def check_deployment(where, d, docs, config_data):
    spec = d["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    name = d["metadata"]["name"]
    if "replicas" in spec:
        problem(f"{where}: replicas is set, but the HorizontalPodAutoscaler owns it")
    c = pod["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe not in c:
            problem(f"{where}: {probe} missing")
    port_names = {p.get("name") for p in c.get("ports", [])}
    if "grpc" in port_names and "grpc" not in c.get("readinessProbe", {}):
        problem(f"{where}: a gRPC service must use a native grpc readinessProbe")
    if "grpc" not in port_names and "httpGet" not in c.get("readinessProbe", {}):
        problem(f"{where}: an HTTP service must use an httpGet readinessProbe")
    # The grace period must cover the preStop pause plus the drain the process is configured for.
    drain = 20
    for ref in c.get("envFrom") or []:
        cm = config_data.get((ref.get("configMapRef") or {}).get("name"))
        if cm and "SHUTDOWN_GRACE_PERIOD_SECS" in cm:
            drain = int(cm["SHUTDOWN_GRACE_PERIOD_SECS"])
    pause = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < drain + pause + 5:
        problem(f"{where}: terminationGracePeriodSeconds {grace} < preStop {pause} + drain {drain} + 5")

    def kinds(kind):
        return [x for x in docs if x["kind"] == kind]

    if not any(h["spec"]["scaleTargetRef"]["name"] == name for h in kinds("HorizontalPodAutoscaler")):
        problem(f"{where}: no HorizontalPodAutoscaler")
    if not any(selects(p["spec"]["selector"], labels) for p in kinds("PodDisruptionBudget")):
        problem(f"{where}: no PodDisruptionBudget")
    if not any(selects(s["spec"].get("selector"), labels) for s in kinds("Service")):
        problem(f"{where}: no Service")
    if not any(selects(n["spec"]["podSelector"], labels) for n in kinds("NetworkPolicy")):
        problem(f"{where}: no NetworkPolicy of its own")


# The one-off admin subcommands a CronJob may run (`migrate` belongs to the release's Job, `serve` to the
# Deployment).
ADMIN_COMMANDS = {"repair", "archive", "report"}


def pod_template(d):
    """The pod template of a workload: Deployment and Job directly, CronJob through its job template."""
    if d["kind"] in ("Deployment", "Job"):
        return d["spec"]["template"]
    if d["kind"] == "CronJob":
        return d["spec"]["jobTemplate"]["spec"]["template"]
    return None


def check_cronjob(where, d):
    spec = d["spec"]
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    labels = job["template"]["metadata"].get("labels", {})
    if spec.get("concurrencyPolicy") != "Forbid":
        problem(f"{where}: concurrencyPolicy must be Forbid (an admin run never overlaps the previous one)")
    if "startingDeadlineSeconds" not in spec:
        problem(f"{where}: startingDeadlineSeconds missing (a long-missed run must be skipped, not started late)")
    if not spec.get("timeZone"):
        problem(f"{where}: timeZone missing (schedules are in UTC, whatever the controller's zone)")
    for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if field not in job:
            problem(f"{where}: jobTemplate.spec.{field} missing")
    if pod.get("restartPolicy") != "Never":
        problem(f"{where}: restartPolicy must be Never (retries are the Job's backoffLimit)")
    args = pod["containers"][0].get("args") or []
    if not args or args[0] not in ADMIN_COMMANDS:
        allowed = ", ".join(sorted(ADMIN_COMMANDS))
        problem(f"{where}: a CronJob here runs an admin subcommand ({allowed}), not {args}")
    if labels.get("app.kubernetes.io/component") != "admin":
        problem(f"{where}: pods must be labelled app.kubernetes.io/component: admin")


def k8s_policy(args):
    for path in args.files:
        docs = load_all(path)
        configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
        config_data = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
        service_accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
        workloads = [d for d in docs if pod_template(d) is not None]
        all_pods = [pod_template(x)["metadata"].get("labels", {}) for x in workloads]
        serving_pods = [pod_template(x)["metadata"].get("labels", {})
                        for x in workloads if x["kind"] in ("Deployment", "Job")]
        policies = [d for d in docs if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"]]
        for d in docs:
            where = f"{path}: {d['kind']}/{d['metadata']['name']}"
            template = pod_template(d)
            if template is not None:
                check_pod(where, template["spec"], configmaps, secrets, args.external_secrets)
                account = template["spec"].get("serviceAccountName")
                if account and account not in service_accounts:
                    problem(f"{where}: ServiceAccount {account} is not rendered")
                if d["kind"] != "Deployment" and not any(
                    selects(n["spec"]["podSelector"], template["metadata"].get("labels", {})) for n in policies
                ):
                    problem(f"{where}: no NetworkPolicy of its own")
            if d["kind"] == "Deployment":
                check_deployment(where, d, docs, config_data)
            if d["kind"] == "Job" and d["spec"]["template"]["spec"]["containers"][0].get("args") != ["migrate"]:
                problem(f"{where}: a Job here runs only `migrate`")
            if d["kind"] == "CronJob":
                check_cronjob(where, d)
            if d["kind"] == "Service" and not any(selects(d["spec"].get("selector"), p) for p in serving_pods):
                problem(f"{where}: selector matches no pod")
            if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"]:
                if not any(selects(d["spec"]["podSelector"], p) for p in all_pods):
                    problem(f"{where}: podSelector matches no pod")
        if args.whole:
            if not any(d["kind"] == "Namespace" for d in docs):
                problem(f"{path}: the whole system must include its Namespace")
            if not any(d["kind"] == "NetworkPolicy" and not d["spec"]["podSelector"]
                       and set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} for d in docs):
                problem(f"{path}: no namespace-wide default-deny NetworkPolicy")


# --- CloudFormation parameter files ----------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as their long form."""


def _cfn_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def rule_value(expr, params):
    """Evaluates the subset of intrinsic functions a Rules section uses."""
    if isinstance(expr, dict):
        (fn, arg), = expr.items()
        if fn == "Ref":
            return params.get(arg, "")
        values = [rule_value(a, params) for a in arg] if isinstance(arg, list) else rule_value(arg, params)
        if fn == "Fn::Equals":
            return str(values[0]) == str(values[1])
        if fn == "Fn::Not":
            return not values[0]
        if fn == "Fn::And":
            return all(values)
        if fn == "Fn::Or":
            return any(values)
        if fn == "Fn::Contains":
            return str(values[1]) in [str(v) for v in values[0]]
        raise ValueError(f"unsupported function in Rules: {fn}")
    return expr


def cfn_params(args):
    with open(args.template, encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)  # noqa: S506 (a SafeLoader subclass)
    declared = template.get("Parameters", {})
    for path in args.params:
        with open(path, encoding="utf-8") as f:
            given = json.load(f)
        for key, value in given.items():
            if key not in declared:
                problem(f"{path}: {key} is not a parameter of {args.template}")
            elif "AllowedValues" in declared[key] and str(value) not in [str(v) for v in declared[key]["AllowedValues"]]:
                problem(f"{path}: {key}={value} is not one of {declared[key]['AllowedValues']}")
            elif "AllowedPattern" in declared[key] and not re.fullmatch(declared[key]["AllowedPattern"], str(value)):
                problem(f"{path}: {key}={value} does not match {declared[key]['AllowedPattern']}")
        # Image comes from the pipeline at deploy time.
        missing = [k for k, v in declared.items() if "Default" not in v and k not in given and k != "Image"]
        if missing:
            problem(f"{path}: missing required parameters {missing}")
        params = {k: str(v.get("Default", "")) for k, v in declared.items()}
        params.update({k: str(v) for k, v in given.items()})
        for name, rule in (template.get("Rules") or {}).items():
            if "RuleCondition" in rule and not rule_value(rule["RuleCondition"], params):
                continue
            for assertion in rule["Assertions"]:
                if not rule_value(assertion["Assert"], params):
                    problem(f"{path}: rule {name}: {assertion.get('AssertDescription', 'assertion fails')}")


# --- GitHub Actions --------------------------------------------------------------------------------------


def workflow_scripts(args):
    """Writes each run block as a bash script, with ${{ }} expressions replaced as actionlint does."""
    os.makedirs(args.outdir, exist_ok=True)
    for path in args.workflows:
        with open(path, encoding="utf-8") as f:
            workflow = yaml.safe_load(f)
        if not isinstance(workflow, dict) or "jobs" not in workflow:
            problem(f"{path}: not a workflow (no jobs)")
            continue
        for job_name, job in workflow["jobs"].items():
            for i, step in enumerate(job.get("steps") or []):
                if "run" not in step:
                    continue
                shell = step.get("shell") or (job.get("defaults") or {}).get("run", {}).get("shell", "bash")
                if shell != "bash":
                    continue
                body = re.sub(r"\$\{\{.*?\}\}", lambda m: "_" * len(m.group(0)), step["run"])
                name = f"{os.path.basename(path)}.{job_name}.{i}.sh"
                with open(os.path.join(args.outdir, name), "w", encoding="utf-8") as out:
                    # GitHub runs bash steps as `bash --noprofile --norc -eo pipefail {0}`.
                    out.write("#!/usr/bin/env bash\nset -eo pipefail\n" + body)


# --- compose ---------------------------------------------------------------------------------------------


def compose_mounts(args):
    base = os.path.dirname(os.path.abspath(args.compose))
    with open(args.compose, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    for name, service in (compose.get("services") or {}).items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not os.path.exists(os.path.join(base, source)):
                problem(f"{args.compose}: service {name} mounts {source}, which does not exist")


# --- dashboards ------------------------------------------------------------------------------------------

# Histograms are exported as NAME_bucket, NAME_sum and NAME_count.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Metrics exported by a library rather than by a `metrics::...!("name")` of ours.
LIBRARY_PREFIXES = ("process_", "rabbitmq_")


def exported_metrics(source_dir):
    """Every metric name a `metrics::counter!`, `gauge!` or `histogram!` of the Rust sources names."""
    names = set()
    pattern = re.compile(r'metrics::(?:counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
    for root, _, files in os.walk(source_dir):
        for file in files:
            if file.endswith(".rs"):
                with open(os.path.join(root, file), encoding="utf-8") as f:
                    names.update(pattern.findall(f.read()))
    return names


def dashboard(args):
    import promql_parser  # only this check needs it

    exported = exported_metrics(args.source)
    for path in args.dashboards:
        with open(path, encoding="utf-8") as f:
            board = json.load(f)
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                where = f"{path}: panel {panel.get('title')!r} {target.get('refId')}"
                try:
                    expr = promql_parser.parse(target["expr"])
                except Exception as error:  # the parser raises a bare exception with the reason
                    problem(f"{where}: not PromQL: {error}")
                    continue
                names = []

                def selected(node, names=names):
                    if isinstance(node, promql_parser.VectorSelector):
                        names.append(node.name)

                promql_parser.walk(expr, selected)
                for name in names:
                    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
                    if not name.startswith(LIBRARY_PREFIXES) and name not in exported and base not in exported:
                        problem(f"{where}: {name} is exported by no service")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("k8s-policy")
    p.add_argument("--whole", action="store_true", help="the render is a whole system (namespace included)")
    p.add_argument("--external-secrets", action="store_true", help="Secrets are created outside git")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=k8s_policy)
    p = sub.add_parser("cfn-params")
    p.add_argument("template")
    p.add_argument("params", nargs="+")
    p.set_defaults(run=cfn_params)
    p = sub.add_parser("workflow-scripts")
    p.add_argument("outdir")
    p.add_argument("workflows", nargs="+")
    p.set_defaults(run=workflow_scripts)
    p = sub.add_parser("compose-mounts")
    p.add_argument("compose")
    p.set_defaults(run=compose_mounts)
    p = sub.add_parser("dashboard")
    p.add_argument("source", help="the Rust sources (crates/)")
    p.add_argument("dashboards", nargs="+")
    p.set_defaults(run=dashboard)
    args = parser.parse_args()
    args.run(args)
    for message in PROBLEMS:
        print(message)
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
