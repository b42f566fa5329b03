{{/*
The labels the Deployment selects its pods by; every object carries them.
*/}}
{{- define "inferd.selectorLabels" -}}
app.kubernetes.io/name: inferd-operator
app.kubernetes.io/part-of: inferd
{{- end }}

{{/*
The labels of every object: the selector's, then .Values.extraLabels.
*/}}
{{- define "inferd.labels" -}}
{{ include "inferd.selectorLabels" . }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The image holding the inferd binary; its tag defaults to the appVersion.
*/}}
{{- define "inferd.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
