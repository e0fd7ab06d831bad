{{/* Chart name, overridable. */}}
{{- define "fundus-seg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-<chart> unless the release already contains it. */}}
{{- define "fundus-seg.fullname" -}}
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

{{- define "fundus-seg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fundus-seg.labels" -}}
helm.sh/chart: {{ include "fundus-seg.chart" . }}
{{ include "fundus-seg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fundus-seg
{{- end }}

{{- define "fundus-seg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fundus-seg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* InferenceService name (also the TF Serving model name). */}}
{{- define "fundus-seg.isvcName" -}}
{{- default .Values.model.name .Values.inferenceService.name | trunc 45 | trimSuffix "-" }}
{{- end }}

{{- define "fundus-seg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fundus-seg.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fundus-seg.storageSecretName" -}}
{{- if .Values.storage.createSecret }}
{{- printf "%s-storage" (include "fundus-seg.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Values.storage.existingSecret }}
{{- end }}
{{- end }}

{{/* Version directory URI: <repository>/<name>/<version> */}}
{{- define "fundus-seg.versionUri" -}}
{{- printf "%s/%s/%v" (trimSuffix "/" .Values.model.repository) .Values.model.name .Values.model.version }}
{{- end }}

{{- define "fundus-seg.predictorHost" -}}
{{- default (printf "%s-predictor.%s.svc.cluster.local:80" (include "fundus-seg.isvcName" .) .Release.Namespace) .Values.transformer.predictorHost }}
{{- end }}

{{- define "fundus-seg.image" -}}
{{- printf "%s:%s" .Values.transformer.image.repository (default .Chart.AppVersion .Values.transformer.image.tag) }}
{{- end }}

{{/* Scheduling fields shared by both components: pass the component's values. */}}
{{- define "fundus-seg.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The deployment mode as KServe >= 0.16 names it (and writes into status.deploymentMode):
Knative or Standard; the legacy Serverless and RawDeployment are translated. Empty: the cluster's. */}}
{{- define "fundus-seg.deploymentMode" -}}
{{- $mode := .Values.inferenceService.deploymentMode | default "" }}
{{- get (dict "Serverless" "Knative" "RawDeployment" "Standard") $mode | default $mode }}
{{- end }}

{{/* Refuse autoscaling metrics the deployment mode cannot use (KServe rejects them later, less clearly). */}}
{{- define "fundus-seg.checkScaling" -}}
{{- $mode := include "fundus-seg.deploymentMode" . }}
{{- $hpa := eq (get .Values.inferenceService.annotations "serving.kserve.io/autoscalerClass" | default "") "hpa" }}
{{- range $component := list "predictor" "transformer" }}
{{- $metric := (get $.Values $component).scaleMetric }}
{{- if and (eq $mode "Knative") (not $hpa) (has $metric (list "cpu" "memory")) }}
{{- fail (printf "%s.scaleMetric=%s needs the HPA autoscaler in Knative mode: use concurrency or rps, or annotate serving.kserve.io/autoscalerClass: hpa" $component $metric) }}
{{- end }}
{{- if and (eq $mode "Standard") (has $metric (list "concurrency" "rps")) }}
{{- fail (printf "%s.scaleMetric=%s is Knative-only; Standard mode scales on cpu or memory" $component $metric) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The transformer's container: its own component's `kserve-container`, or `transformer-container`
in the predictor's pod (KServe's name for a collocated transformer). Pass root, name, predictorHost. */}}
{{- define "fundus-seg.transformerContainer" -}}
{{- $root := .root -}}
- name: {{ .name }}
  image: {{ include "fundus-seg.image" $root }}
  imagePullPolicy: {{ $root.Values.transformer.image.pullPolicy }}
  command: [python, -m, serving.transformer]
  args:
    - --model_name
    - {{ include "fundus-seg.isvcName" $root }}
    - --predictor_host
    - {{ .predictorHost }}
    {{- range $root.Values.transformer.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- with $root.Values.transformer.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    {{- toYaml $root.Values.transformer.ports | nindent 4 }}
  resources:
    {{- toYaml $root.Values.transformer.resources | nindent 4 }}
  {{- with $root.Values.transformer.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
