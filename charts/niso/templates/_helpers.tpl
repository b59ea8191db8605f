{{/* Names, labels and the pieces both Deployments share. */}}

{{- define "niso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "niso.fullname" -}}
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

{{- define "niso.operatorFullname" -}}
{{- printf "%s-operator" (include "niso.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped objects are named after the release and its namespace: the same release
name in two namespaces must not collide. */}}
{{- define "niso.operatorClusterName" -}}
{{- printf "%s-%s" (include "niso.operatorFullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "niso.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "niso.labels" -}}
helm.sh/chart: {{ include "niso.chart" . }}
app.kubernetes.io/name: {{ include "niso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: niso
{{- end }}

{{/* Selector labels of a component: include with (dict "ctx" $ "component" "server"). */}}
{{- define "niso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "niso.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "niso.componentLabels" -}}
{{ include "niso.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "niso.serverServiceAccountName" -}}
{{- if .Values.server.serviceAccount.create }}
{{- default (include "niso.fullname" .) .Values.server.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.server.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "niso.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "niso.operatorFullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "niso.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The registry URL the operator writes into ApiKey Secrets: operator.registryUrl, else the
     first Ingress host, else the in-cluster Service. */}}
{{- define "niso.registryUrl" -}}
{{- if .Values.operator.registryUrl }}
{{- .Values.operator.registryUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}{{ if has $host (default (list) .hosts) }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "niso.fullname" .) .Release.Namespace (int .Values.server.service.port) }}
{{- end }}
{{- end }}

{{/* The configuration both binaries read: database, object storage, limits, logs, traces. */}}
{{- define "niso.commonEnv" -}}
- name: NISO_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
- name: NISO_DATABASE_MAX_CONNECTIONS
  value: {{ .Values.database.maxConnections | quote }}
- name: NISO_DATA_DIR
  value: /tmp/niso-data
- name: NISO_S3_BUCKET
  value: {{ .Values.storage.s3.bucket | quote }}
{{- with .Values.storage.s3.endpoint }}
- name: NISO_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.s3.region }}
- name: NISO_S3_REGION
  value: {{ . | quote }}
{{- end }}
- name: NISO_S3_FORCE_PATH_STYLE
  value: {{ .Values.storage.s3.forcePathStyle | quote }}
{{- with .Values.storage.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.s3.secretAccessKeyKey }}
{{- end }}
- name: NISO_MAX_UPLOAD_BYTES
  value: {{ .Values.config.maxUploadBytes | int64 | toString | quote }}
- name: NISO_LOG
  value: {{ .Values.config.logLevel | quote }}
- name: NISO_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.tracing.resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Ids from .Values.securityContext; a null one is left to the platform (OpenShift). */}}
{{- define "niso.ids" -}}
{{- $ids := .ctx.Values.securityContext }}
{{- range $field := .fields }}
{{- $value := index $ids $field }}
{{- if not (kindIs "invalid" $value) }}
{{ $field }}: {{ int64 $value }}
{{- end }}
{{- end }}
{{- end }}

{{- define "niso.podSecurityContext" -}}
runAsNonRoot: true
{{- include "niso.ids" (dict "ctx" . "fields" (list "runAsUser" "runAsGroup" "fsGroup")) }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "niso.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
{{- include "niso.ids" (dict "ctx" . "fields" (list "runAsUser" "runAsGroup")) }}
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A PodDisruptionBudget's spec from a podDisruptionBudget value block. */}}
{{- define "niso.pdbSpec" -}}
{{- if not (eq (toString .maxUnavailable) "") }}
maxUnavailable: {{ .maxUnavailable | toYaml }}
{{- else if not (eq (toString .minAvailable) "") }}
minAvailable: {{ .minAvailable | toYaml }}
{{- else }}
minAvailable: 1
{{- end }}
{{- end }}

{{/* What the operator does to ApiKeys and their Secrets (cluster-wide or per namespace). */}}
{{- define "niso.operatorApiKeyRules" -}}
- apiGroups: ["niso.online"]
  resources: ["apikeys"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["niso.online"]
  resources: ["apikeys/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion on the Secrets need this.
- apiGroups: ["niso.online"]
  resources: ["apikeys/finalizers"]
  verbs: ["update"]
# The Secrets holding ApiKey values: written with server-side apply, watched (by label) so a
# deleted or edited Secret is rewritten, deleted when an ApiKey's secretName changes. RBAC
# cannot scope list/watch to a label: this grants reading Secrets wherever it applies (limit
# it with operator.watchNamespaces).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
