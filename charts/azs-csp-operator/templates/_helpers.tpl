{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "azs-csp-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: the release name, plus the chart name unless contained. */}}
{{- define "azs-csp-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "azs-csp-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "azs-csp-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "azs-csp-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "azs-csp-operator.labels" -}}
helm.sh/chart: {{ include "azs-csp-operator.chart" . }}
{{ include "azs-csp-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: azs-csp-operator
{{- end }}

{{- define "azs-csp-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "azs-csp-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest when a digest is set, else repository:tag. */}}
{{- define "azs-csp-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Leader election follows the replica count: several pods need one writer. */}}
{{- define "azs-csp-operator.leaderElection" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* True in azure mode: ARM decides, no resolver runs. */}}
{{- define "azs-csp-operator.azureMode" -}}
{{- if eq .Values.mode "azure" }}true{{ end }}
{{- end }}

{{/* True when the catalog resolver reads a ConfigMap (local mode only). */}}
{{- define "azs-csp-operator.catalogEnabled" -}}
{{- if and (not (include "azs-csp-operator.azureMode" .)) (eq .Values.resolver.type "catalog") }}true{{ end }}
{{- end }}

{{/* True when the http resolver runs (local mode only). */}}
{{- define "azs-csp-operator.httpResolverEnabled" -}}
{{- if and (not (include "azs-csp-operator.azureMode" .)) (eq .Values.resolver.type "http") }}true{{ end }}
{{- end }}

{{/* The credential kind in azure mode, empty in local mode. */}}
{{- define "azs-csp-operator.azureCredential" -}}
{{- if include "azs-csp-operator.azureMode" . }}{{ .Values.azure.credential }}{{ end }}
{{- end }}

{{/* True when the Azure Workload Identity webhook mutates the pod. */}}
{{- define "azs-csp-operator.workloadIdentityWebhook" -}}
{{- if and (eq (include "azs-csp-operator.azureCredential" .) "workload-identity") .Values.azure.workloadIdentity.webhook }}true{{ end }}
{{- end }}

{{/* True when the chart projects the federated ServiceAccount token itself (no webhook). */}}
{{- define "azs-csp-operator.projectedAzureToken" -}}
{{- if and (eq (include "azs-csp-operator.azureCredential" .) "workload-identity") (not .Values.azure.workloadIdentity.webhook) }}true{{ end }}
{{- end }}

{{/* True when the Secret with the Azure client secret is mounted. */}}
{{- define "azs-csp-operator.azureClientSecretMounted" -}}
{{- if eq (include "azs-csp-operator.azureCredential" .) "client-secret" }}true{{ end }}
{{- end }}

{{/* True when a CA bundle for ARM and Entra ID is mounted (azure mode only). */}}
{{- define "azs-csp-operator.azureCAMounted" -}}
{{- if and (include "azs-csp-operator.azureMode" .) (or .Values.azure.caConfigMap.name .Values.azure.caSecret.name) }}true{{ end }}
{{- end }}

{{/* Where the pod finds the federated token: the webhook's path, so both setups read alike. */}}
{{- define "azs-csp-operator.azureTokenDir" -}}
/var/run/secrets/azure/tokens
{{- end }}

{{/* The ServiceAccount's annotations: workload identity's, then the user's (which win). */}}
{{- define "azs-csp-operator.serviceAccountAnnotations" -}}
{{- $annotations := dict }}
{{- if eq (include "azs-csp-operator.azureCredential" .) "workload-identity" }}
{{- $_ := set $annotations "azure.workload.identity/client-id" .Values.azure.clientId }}
{{- if .Values.azure.tenantId }}
{{- $_ := set $annotations "azure.workload.identity/tenant-id" .Values.azure.tenantId }}
{{- end }}
{{- end }}
{{- $annotations = merge (deepCopy .Values.serviceAccount.annotations) $annotations }}
{{- with $annotations }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{- define "azs-csp-operator.catalogConfigMapName" -}}
{{- default (printf "%s-catalog" (include "azs-csp-operator.fullname" .)) .Values.catalog.existingConfigMap.name }}
{{- end }}

{{- define "azs-csp-operator.catalogConfigMapNamespace" -}}
{{- if .Values.catalog.existingConfigMap.name }}
{{- default .Release.Namespace .Values.catalog.existingConfigMap.namespace }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Fails the render on contradictory values, with a message naming them. */}}
{{- define "azs-csp-operator.validate" -}}
{{- if not (has .Values.mode (list "local" "azure")) }}
{{- fail (printf "mode must be local or azure, not %q" .Values.mode) }}
{{- end }}
{{- if and .Values.azure.caConfigMap.name .Values.azure.caSecret.name }}
{{- fail "set azure.caConfigMap.name or azure.caSecret.name, not both" }}
{{- end }}
{{- if not (has .Values.resolver.type (list "catalog" "http")) }}
{{- fail (printf "resolver.type must be catalog or http, not %q" .Values.resolver.type) }}
{{- end }}
{{- if and (include "azs-csp-operator.httpResolverEnabled" .) (not .Values.http.url) }}
{{- fail "http.url is required when resolver.type is http" }}
{{- end }}
{{- if and .Values.http.caConfigMap.name .Values.http.caSecret.name }}
{{- fail "set http.caConfigMap.name or http.caSecret.name, not both" }}
{{- end }}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat must be json or text, not %q" .Values.logFormat) }}
{{- end }}
{{- if lt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount must be at least 1" }}
{{- end }}
{{- end }}

{{/* The rules of the operator on its two kinds and on Events, for a Role or a ClusterRole.
Exactly the verbs the code uses:
- registrations: watched (list, watch; get by kube-runtime's await/tools), finalizer added
  and removed by server-side apply (patch);
- registrations/status and customersubscriptions/status: server-side apply (patch);
- customersubscriptions: watched; in azure mode also patched, for the finalizer
  csp.azurestack.io/azure-detach (server-side apply of metadata.finalizers);
- events.k8s.io events: kube-runtime's Recorder creates an Event, then patches its series. */}}
{{- define "azs-csp-operator.operatorRules" -}}
- apiGroups: ["csp.azurestack.io"]
  resources: ["registrations"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["csp.azurestack.io"]
  resources: ["registrations/status"]
  verbs: ["patch"]
- apiGroups: ["csp.azurestack.io"]
  resources: ["customersubscriptions"]
  {{- if include "azs-csp-operator.azureMode" . }}
  verbs: ["get", "list", "watch", "patch"]
  {{- else }}
  verbs: ["get", "list", "watch"]
  {{- end }}
- apiGroups: ["csp.azurestack.io"]
  resources: ["customersubscriptions/status"]
  verbs: ["patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
