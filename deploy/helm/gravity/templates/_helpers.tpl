{{- define "gravity.fullname" -}}{{ .Release.Name }}-gravity{{- end -}}
{{- define "gravity.redisUrl" -}}
{{- if .Values.redis.url -}}{{ .Values.redis.url }}{{- else -}}redis://{{ include "gravity.fullname" . }}-redis:6379/0{{- end -}}
{{- end -}}
