{{/* Labels of every object; selector labels pick one component. */}}
{{- define "gateway.labels" -}}
app.kubernetes.io/name: gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "gateway.selector" -}}
app.kubernetes.io/name: gateway
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A file of render's kubernetes output; fails with what to run when it is missing. */}}
{{- define "gateway.rendered" -}}
{{- $text := .root.Files.Get (printf "files/rendered/%s" .path) -}}
{{- if not $text -}}
{{- fail (printf "files/rendered/%s is missing: run `make helm-render` (render.py --target kubernetes) first" .path) -}}
{{- end -}}
{{- $text -}}
{{- end }}

{{/* Non-root, read-only, no capabilities: every container. */}}
{{- define "gateway.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .uid }}
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "gateway.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* repository@digest when a digest is set (production), else repository:tag. */}}
{{- define "gateway.image" -}}
{{- if .digest }}{{ .repository }}@{{ .digest }}{{ else }}{{ .repository }}:{{ .tag }}{{ end }}
{{- end }}

{{/* The directory of Envoy's access logs, from render's kubernetes output (the manifest the
     shipper reads lists the files Envoy writes): where the access-logs volume is mounted. */}}
{{- define "gateway.accessLogDir" -}}
{{- $manifest := include "gateway.rendered" (dict "root" . "path" "audit/access_logs.json") | fromJson -}}
{{- (index $manifest.access_logs 0).path | dir -}}
{{- end }}
