{{/*
Names and labels, the usual Helm helpers.
*/}}
{{- define "extauth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name when it already contains the chart name (so
release "extauth" gives Service "extauth"), else "<release>-<chart>".
*/}}
{{- define "extauth.fullname" -}}
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

{{- define "extauth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extauth.labels" -}}
helm.sh/chart: {{ include "extauth.chart" . }}
{{ include "extauth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "extauth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extauth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "extauth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "extauth.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "extauth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Ports and paths. The ports are fixed because the chart writes them into the
config file (server.address, server.metricsAddress) and the probes, Service
and NetworkPolicy must agree with it.
*/}}
{{- define "extauth.httpPort" -}}4180{{- end }}
{{- define "extauth.metricsPort" -}}9090{{- end }}
{{- define "extauth.configPath" -}}/etc/extauth/config.yaml{{- end }}
{{- define "extauth.secretsDir" -}}/etc/extauth/secrets{{- end }}

{{- define "extauth.pathPrefix" -}}
{{- dig "server" "pathPrefix" "/oauth2" (.Values.config | default dict) | trimSuffix "/" }}
{{- end }}

{{/* The Service's DNS name, as the ingress controller reaches it. */}}
{{- define "extauth.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "extauth.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* The Secret the pods mount: the user's, or the chart's. */}}
{{- define "extauth.secretName" -}}
{{- default (include "extauth.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* "true" when the config should name a client secret file. */}}
{{- define "extauth.hasClientSecret" -}}
{{- if or .Values.existingSecret .Values.secrets.clientSecret }}true{{ end }}
{{- end }}

{{/* "true" when the user gave no session secret and the chart generates one. */}}
{{- define "extauth.generatedSessionSecret" -}}
{{- if not (or .Values.existingSecret .Values.secrets.sessionSecrets) }}true{{ end }}
{{- end }}

{{/*
The config file: .Values.config with the keys the chart owns filled in.
Secrets never enter it; they are mounted from the Secret as files, and the
file keys point at them.
*/}}
{{- define "extauth.configFile" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := get $cfg "server" | default dict }}
{{- $owned := dict "address" (printf ":%s" (include "extauth.httpPort" .)) "metricsAddress" (printf ":%s" (include "extauth.metricsPort" .)) }}
{{- range $key, $want := $owned }}
{{- if and (hasKey $server $key) (ne (toString (get $server $key)) $want) }}
{{- fail (printf "config.server.%s: the chart sets it to %q, the container port; leave it out" $key $want) }}
{{- end }}
{{- $_ := set $server $key $want }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- $oidc := get $cfg "oidc" | default dict }}
{{- if not $oidc.issuerURL }}
{{- fail "config.oidc.issuerURL is required: the provider's issuer URL" }}
{{- end }}
{{- if not $oidc.clientID }}
{{- fail "config.oidc.clientID is required: this client's ID at the provider" }}
{{- end }}
{{- if or $oidc.clientSecret $oidc.clientSecretFile }}
{{- fail "config.oidc.clientSecret/clientSecretFile: give the client secret as secrets.clientSecret or in existingSecret; the chart mounts it and sets oidc.clientSecretFile" }}
{{- end }}
{{- $_ := unset $oidc "clientSecret" }}
{{- if include "extauth.hasClientSecret" . }}
{{- $_ := set $oidc "clientSecretFile" (printf "%s/client-secret" (include "extauth.secretsDir" .)) }}
{{- else }}
{{- $_ := unset $oidc "clientSecretFile" }}
{{- end }}
{{- $_ := set $cfg "oidc" $oidc }}
{{- $session := get $cfg "session" | default dict }}
{{- if or $session.secrets $session.secretsFile }}
{{- fail "config.session.secrets/secretsFile: give session secrets as secrets.sessionSecrets or in existingSecret; the chart mounts them and sets session.secretsFile" }}
{{- end }}
{{- $_ := unset $session "secrets" }}
{{- $_ := set $session "secretsFile" (printf "%s/session-secrets" (include "extauth.secretsDir" .)) }}
{{- $_ := set $cfg "session" $session }}
{{- toYaml $cfg }}
{{- end }}

{{/*
server.shutdownTimeout in whole seconds, rounded up. It is a Go duration
("15s", "1m30s", "500ms"); Helm has no parser for those, so the units are
summed here.
*/}}
{{- define "extauth.shutdownSeconds" -}}
{{- $d := toString (dig "server" "shutdownTimeout" "15s" (.Values.config | default dict)) }}
{{- $units := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" $d -1 }}
{{- $num := regexFind "^[0-9.]+" . | float64 }}
{{- $unit := regexReplaceAll "^[0-9.]+" . "" }}
{{- $total = addf $total (mulf $num (get $units $unit)) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}
