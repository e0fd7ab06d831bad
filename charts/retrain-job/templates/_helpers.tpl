{{/* Chart name, overridable. */}}
{{- define "retrain-job.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-<chart> unless the release already contains it. */}}
{{- define "retrain-job.fullname" -}}
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

{{- define "retrain-job.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retrain-job.labels" -}}
helm.sh/chart: {{ include "retrain-job.chart" . }}
{{ include "retrain-job.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fundus-seg
{{- end }}

{{- define "retrain-job.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retrain-job.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "retrain-job.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "retrain-job.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "retrain-job.storageSecretName" -}}
{{- if .Values.storage.createSecret }}
{{- printf "%s-storage" (include "retrain-job.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Values.storage.existingSecret }}
{{- end }}
{{- end }}

{{/* The image: `image.tag`, or the appVersion with the accelerator's build suffix (Dockerfile.training
VARIANT: `-gpu`, `-tpu`; none for cpu). */}}
{{- define "retrain-job.image" -}}
{{- $suffix := ternary "" (printf "-%s" .Values.accelerator) (eq .Values.accelerator "cpu") }}
{{- printf "%s:%s" .Values.image.repository (default (printf "%s%s" .Chart.AppVersion $suffix) .Values.image.tag) }}
{{- end }}

{{/* The run id as the containers see it: `training.runId`, or `$(RUN_ID)` -- the Job's uid, which
the kubelet expands from the RUN_ID env var (see retrain-job.runIdEnv). */}}
{{- define "retrain-job.runId" -}}
{{- default "$(RUN_ID)" .Values.training.runId }}
{{- end }}

{{/* RUN_ID: the Job's uid (the pod label the Job controller sets, Kubernetes >= 1.27), the same for
every retried pod of the Job and never the same for two Jobs -- not even after an uninstall and
install, which restarts the release revisions at 1. */}}
{{- define "retrain-job.runIdEnv" -}}
{{- if not .Values.training.runId }}
- name: RUN_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['batch.kubernetes.io/controller-uid']
{{- end }}
{{- end }}

{{- define "retrain-job.rolloutNamespace" -}}
{{- default .Release.Namespace .Values.rollout.namespace }}
{{- end }}

{{/* The hardware preset's values (cpu, gpu or tpu). */}}
{{- define "retrain-job.preset" -}}
{{- toYaml (get .Values .Values.accelerator) }}
{{- end }}

{{/* Object-storage environment shared by the training and rollout containers. */}}
{{- define "retrain-job.storageEnv" -}}
{{- with include "retrain-job.storageSecretName" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- $secret := include "retrain-job.storageSecretName" . }}
{{- range $name, $value := dict "AWS_ENDPOINT_URL" .Values.storage.endpointUrl "AWS_REGION" .Values.storage.region }}
{{- if $value }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- else if $secret }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $name }}
      optional: true
{{- end }}
{{- end }}
{{- end }}
