{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "mnist-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "mnist-serving.fullname" -}}
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

{{- define "mnist-serving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "mnist-serving.labels" -}}
helm.sh/chart: {{ include "mnist-serving.chart" . }}
{{ include "mnist-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mnist-serving
{{- end }}

{{/* Labels that select the operator pod (immutable once the Deployment exists). */}}
{{- define "mnist-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mnist-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mnist-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mnist-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mnist-serving.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Namespaces the operator watches ("" list = all, for scope cluster). */}}
{{- define "mnist-serving.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "namespace" }}
{{- default (list .Release.Namespace) .Values.rbac.namespaces | uniq | join "," }}
{{- end }}
{{- end }}
