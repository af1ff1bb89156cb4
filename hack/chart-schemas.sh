#!/usr/bin/env bash
# Writes kubeconform JSON schemas for every kind the running API server serves (built-in
# kinds and installed CRDs), converted from its OpenAPI v2 document, into OUTDIR:
#   OUTDIR/<group, or the version for core>/<version>/<kind, lower case>.json
# Use with: kubeconform -schema-location 'OUTDIR/{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json'
# kubeconform's usual schemas are downloaded from GitHub; this needs no download and matches
# the server's version exactly (the conversion follows openapi2jsonschema's "standalone-strict":
# int-or-string and quantities accept both forms, objects refuse unknown fields).
# Usage: hack/chart-schemas.sh OUTDIR   (KUBECTL overrides the kubectl command; default:
# hack/kubectl, bound to the local cluster)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
out="$1"
kubectl="${KUBECTL:-$HACK_DIR/kubectl}"
mkdir -p "$out"
openapi="$(mktemp)"
trap 'rm -f "$openapi"' EXIT
$kubectl get --raw /openapi/v2 >"$openapi" || die "cannot read /openapi/v2 from the API server (is the cluster up? make cluster-up)"

python3 - "$openapi" "$out" <<'PY'
import copy, json, os, sys

definitions = json.load(open(sys.argv[1]))["definitions"]
out = sys.argv[2]
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def convert(node):
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return dict(INT_OR_STRING)
    node = {k: convert(v) for k, v in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def refs(node, found):
    if isinstance(node, list):
        for n in node:
            refs(n, found)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            name = ref[len("#/definitions/"):]
            if name not in found and name in definitions:
                found.add(name)
                refs(definitions[name], found)
        for v in node.values():
            refs(v, found)


converted = {}
for name, schema in definitions.items():
    if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
        converted[name] = dict(QUANTITY)
    else:
        converted[name] = convert(schema)

written = 0
for name, schema in definitions.items():
    for gvk in schema.get("x-kubernetes-group-version-kind", []):
        needed = set()
        refs(schema, needed)
        root = copy.deepcopy(converted[name])
        root["$schema"] = "http://json-schema.org/draft-04/schema#"
        root["definitions"] = {n: converted[n] for n in sorted(needed)}
        group = gvk["group"] or gvk["version"]
        path = os.path.join(out, group, gvk["version"], gvk["kind"].lower() + ".json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(root, f)
        written += 1
print(f"wrote {written} schemas to {out}", file=sys.stderr)
PY
