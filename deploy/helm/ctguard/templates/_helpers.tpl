{{/* The name of every object. */}}
{{- define "ctguard.fullname" -}}
{{- if contains "ctguard" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-ctguard" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "ctguard.labels" -}}
{{ include "ctguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "ctguard.selectorLabels" -}}
app.kubernetes.io/name: ctguard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* GOMEMLIMIT: goMemLimitPercent of the memory limit, in MiB. */}}
{{- define "ctguard.goMemLimit" -}}
{{- $mem := toString .Values.resources.limits.memory -}}
{{- $pct := int .Values.goMemLimitPercent -}}
{{- if or (lt $pct 50) (gt $pct 95) -}}
{{- fail (printf "goMemLimitPercent: %d must be between 50 and 95" $pct) -}}
{{- end -}}
{{- $mib := 0 -}}
{{- if regexMatch "^[0-9]+Mi$" $mem -}}
{{- $mib = trimSuffix "Mi" $mem | atoi -}}
{{- else if regexMatch "^[0-9]+Gi$" $mem -}}
{{- $mib = mul (trimSuffix "Gi" $mem | atoi) 1024 -}}
{{- else -}}
{{- fail (printf "resources.limits.memory: %q must be given in Mi or Gi (GOMEMLIMIT is derived from it)" $mem) -}}
{{- end -}}
{{- printf "%dMiB" (div (mul $mib $pct) 100) -}}
{{- end -}}
