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

{{/*
Where the Redis secrets are mounted: redis.existingSecret's keys (their own
volume, the items renamed to the names below) and the CA of redis.tls.caSecret.
*/}}
{{- define "extauth.redisSecretDir" -}}/etc/extauth/redis{{- end }}
{{- define "extauth.redisCADir" -}}/etc/extauth/redis-ca{{- end }}

{{/*
The file session.redis.passwordFile names, or nothing: a key of
redis.existingSecret, or redis.password in the chart's Secret.
*/}}
{{- define "extauth.redisPasswordFile" -}}
{{- $r := .Values.redis }}
{{- if $r.enabled }}
{{- if $r.existingSecret }}
{{- printf "%s/redis-password" (include "extauth.redisSecretDir" .) }}
{{- else if $r.password }}
{{- printf "%s/redis-password" (include "extauth.secretsDir" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The same for session.redis.sentinel.passwordFile. */}}
{{- define "extauth.redisSentinelPasswordFile" -}}
{{- $r := .Values.redis }}
{{- if and $r.enabled $r.sentinel.masterName }}
{{- if $r.existingSecret }}
{{- if $r.sentinel.existingSecretPasswordKey }}
{{- printf "%s/redis-sentinel-password" (include "extauth.redisSecretDir" .) }}
{{- end }}
{{- else if $r.sentinel.password }}
{{- printf "%s/redis-sentinel-password" (include "extauth.secretsDir" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The TCP ports extauth reaches Redis on, comma-separated, for the
NetworkPolicy: the port of redis.address, or with Sentinel those of the
Sentinels and, for the master they name, of redis.address (6379 without it).
*/}}
{{- define "extauth.redisPorts" -}}
{{- $r := .Values.redis }}
{{- $addrs := list $r.address }}
{{- if $r.sentinel.masterName }}
{{- $addrs = append $r.sentinel.addresses (default ":6379" $r.address) }}
{{- end }}
{{- $ports := list }}
{{- range $addrs }}
{{- $port := regexFind ":[0-9]+$" (toString .) | trimPrefix ":" }}
{{- if not $port }}
{{- fail (printf "redis: no port in %q: give host:port" (toString .)) }}
{{- end }}
{{- $ports = append $ports (int $port) }}
{{- end }}
{{- $ports | uniq | join "," }}
{{- end }}

{{/*
Where an app's oidc.existingSecret is mounted: /etc/extauth/apps/NAME, a
volume per app, so that each Secret's key becomes the file client-secret.
*/}}
{{- define "extauth.appsSecretDir" -}}/etc/extauth/apps{{- end }}

{{/*
The client secrets of config.apps, as a JSON list (include … | fromJsonArray),
one entry per app that has one of its own:
  {name, file, key, value}                   oidc.clientSecret: into the chart's
                                             Secret as key ("app-NAME-client-secret")
  {name, file, volume, secretName, secretKey} oidc.existingSecret: the user's
                                             Secret, its key mounted as file
The config file, the Secret, the pod's volumes and its checksum all come
from this one list, so that they cannot disagree. Values that cannot work
fail here, naming the app.
*/}}
{{- define "extauth.appSecrets" -}}
{{- $out := list }}
{{- $seen := dict }}
{{- range $i, $app := dig "apps" list (.Values.config | default dict) }}
{{- $name := toString (get ($app | default dict) "name") }}
{{- /* The name becomes a Secret key, a volume and a directory. */}}
{{- if not (regexMatch "^[a-z0-9-]{1,32}$" $name) }}
{{- fail (printf "config.apps[%d].name: %q must be 1 to 32 of a-z, 0-9 and -" $i $name) }}
{{- end }}
{{- if hasKey $seen $name }}
{{- fail (printf "config.apps[%d].name: %q is also config.apps[%d]'s name" $i $name (get $seen $name)) }}
{{- end }}
{{- $_ := set $seen $name $i }}
{{- $at := printf "config.apps[%s].oidc" $name }}
{{- $oidc := get $app "oidc" | default dict }}
{{- if $oidc.clientSecretFile }}
{{- fail (printf "%s.clientSecretFile: give the app's client secret as %s.clientSecret or in a Secret of yours named by %s.existingSecret; the chart mounts it and sets %s.clientSecretFile" $at $at $at $at) }}
{{- end }}
{{- $inline := toString ($oidc.clientSecret | default "") }}
{{- if and $oidc.existingSecretKey (not $oidc.existingSecret) }}
{{- fail (printf "%s.existingSecretKey: set %s.existingSecret too, the Secret that holds the key" $at $at) }}
{{- end }}
{{- if $oidc.existingSecret }}
{{- if $inline }}
{{- fail (printf "%s: clientSecret and existingSecret are both set; give one" $at) }}
{{- end }}
{{- $dir := printf "%s/%s" (include "extauth.appsSecretDir" $) $name }}
{{- $out = append $out (dict "name" $name "file" (printf "%s/client-secret" $dir) "volume" (printf "app-%s-secret" $name)
    "secretName" (toString $oidc.existingSecret) "secretKey" (toString ($oidc.existingSecretKey | default "client-secret"))) }}
{{- else if $inline }}
{{- if $.Values.existingSecret }}
{{- fail (printf "%s.clientSecret: with existingSecret the chart creates no Secret to hold it; put it in your Secret (any key) and name both in %s.existingSecret and %s.existingSecretKey" $at $at $at) }}
{{- end }}
{{- $key := printf "app-%s-client-secret" $name }}
{{- $out = append $out (dict "name" $name "file" (printf "%s/%s" (include "extauth.secretsDir" $) $key) "key" $key "value" $inline) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The assertion's signing keys (config.assertion), as a JSON list (include …
| fromJsonArray): the current key first, then the previous ones, each
  {name, key, file, value}   name: the value it came from; key: its key in
                             the Secret the pods mount at secretsDir
                             (assertion-key, assertion-previous-key-N);
                             value: the PEM, only for the chart's Secret
Empty unless config.assertion.enabled: while it is off the keys are
ignored, as redis.password is while Redis is. The config file, the
Secret, its checksum and NOTES all come from this one list. The chart never
generates a key: every replica and every render must sign with the same
one, and a key generated under `helm template` would change on each render
and invalidate every token in flight.
*/}}
{{- define "extauth.assertionKeys" -}}
{{- $out := list }}
{{- $a := get (.Values.config | default dict) "assertion" | default dict }}
{{- if $a.enabled }}
{{- $dir := include "extauth.secretsDir" . }}
{{- $s := .Values.secrets | default dict }}
{{- $inline := prepend ($s.assertionPreviousKeys | default list) ($s.assertionKey | default "") }}
{{- $count := int (.Values.existingSecretAssertionPreviousKeyCount | default 0) }}
{{- if .Values.existingSecret }}
{{- if or $s.assertionKey $s.assertionPreviousKeys }}
{{- fail (printf "secrets.assertionKey/assertionPreviousKeys: with existingSecret the chart creates no Secret to hold them; put them into your Secret %s as the keys assertion-key and assertion-previous-key-0, -1, … and set existingSecretAssertionPreviousKeyCount to the number of previous keys" .Values.existingSecret) }}
{{- end }}
{{- $out = append $out (dict "name" (printf "existingSecret %s" .Values.existingSecret) "key" "assertion-key" "file" (printf "%s/assertion-key" $dir)) }}
{{- range $i := until $count }}
{{- $key := printf "assertion-previous-key-%d" $i }}
{{- $out = append $out (dict "name" (printf "existingSecret %s" $.Values.existingSecret) "key" $key "file" (printf "%s/%s" $dir $key)) }}
{{- end }}
{{- else }}
{{- if $count }}
{{- fail "existingSecretAssertionPreviousKeyCount: only with existingSecret; give the previous keys as secrets.assertionPreviousKeys" }}
{{- end }}
{{- if not $s.assertionKey }}
{{- fail "config.assertion.enabled: no signing key. Run `extauth keygen --assertion` and set secrets.assertionKey to the PEM it prints (helm --set-file secrets.assertionKey=assertion.pem), or put it into existingSecret as the key assertion-key. The chart does not generate one: every replica and every render must share one key, and a generated one would change on every `helm template`, invalidating every token in flight" }}
{{- end }}
{{- $seen := dict }}
{{- range $i, $pem := $inline }}
{{- $name := ternary "secrets.assertionKey" (printf "secrets.assertionPreviousKeys[%d]" (sub $i 1)) (eq $i 0) }}
{{- $key := ternary "assertion-key" (printf "assertion-previous-key-%d" (sub $i 1)) (eq $i 0) }}
{{- $pem = toString $pem }}
{{- if or (not (regexMatch "-----BEGIN (EC )?PRIVATE KEY-----" $pem)) (ne (len (regexFindAll "-----BEGIN " $pem -1)) 1) }}
{{- fail (printf "%s: not one PEM private key (-----BEGIN PRIVATE KEY-----, EC P-256 or Ed25519): give what `extauth keygen --assertion` prints, one key per entry" $name) }}
{{- end }}
{{- $trimmed := trim $pem }}
{{- if hasKey $seen $trimmed }}
{{- fail (printf "%s: the same key as %s; a rotation lists each key once (the new one as secrets.assertionKey, the old ones in secrets.assertionPreviousKeys)" $name (get $seen $trimmed)) }}
{{- end }}
{{- $_ := set $seen $trimmed $name }}
{{- $out = append $out (dict "name" $name "key" $key "file" (printf "%s/%s" $dir $key) "value" $pem) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $out }}
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
{{- $apps := get $cfg "apps" | default list }}
{{- /*
With apps, the top-level oidc may be only what they share: no client ID
(a host no app has is then refused), or no issuer when each app has its own.
*/}}
{{- if not $apps }}
{{- if not $oidc.issuerURL }}
{{- fail "config.oidc.issuerURL is required: the provider's issuer URL" }}
{{- end }}
{{- if not $oidc.clientID }}
{{- fail "config.oidc.clientID is required: this client's ID at the provider" }}
{{- end }}
{{- end }}
{{- range $apps }}
{{- $appOIDC := get (. | default dict) "oidc" | default dict }}
{{- if not (or $oidc.issuerURL $appOIDC.issuerURL) }}
{{- fail (printf "config.apps[%s].oidc.issuerURL is required: its provider's issuer URL (or config.oidc.issuerURL, which every app inherits)" (toString .name)) }}
{{- end }}
{{- if not (or $oidc.clientID $appOIDC.clientID) }}
{{- fail (printf "config.apps[%s].oidc.clientID is required: the app's client ID at the provider" (toString .name)) }}
{{- end }}
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
{{- /*
Each app's own client secret becomes a file key, as the top level's does;
existingSecret/existingSecretKey are the chart's, not extauth's, keys. An
app without one inherits the top level's clientSecretFile (extauth's
inheritance); `clientSecret: ""` stays, and makes the app a public client
that does not inherit it.
*/}}
{{- $files := dict }}
{{- range include "extauth.appSecrets" . | fromJsonArray }}
{{- $_ := set $files .name .file }}
{{- end }}
{{- range $apps }}
{{- $appOIDC := get . "oidc" | default dict }}
{{- $_ := unset $appOIDC "existingSecret" }}
{{- $_ := unset $appOIDC "existingSecretKey" }}
{{- $_ := unset $appOIDC "clientSecretFile" }}
{{- with get $files (toString .name) }}
{{- $_ := unset $appOIDC "clientSecret" }}
{{- $_ := set $appOIDC "clientSecretFile" . }}
{{- end }}
{{- if $appOIDC }}
{{- $_ := set . "oidc" $appOIDC }}
{{- end }}
{{- end }}
{{- /*
The assertion's keys are secrets: they are mounted from the Secret, and
assertion.keyFile and previousKeyFiles name them. enabled, header, issuer
and lifetime pass through.
*/}}
{{- $assertion := get $cfg "assertion" | default dict }}
{{- range $key := list "keyFile" "previousKeyFiles" }}
{{- if get $assertion $key }}
{{- fail (printf "config.assertion.%s: the assertion keys are secrets: give them as secrets.assertionKey and secrets.assertionPreviousKeys (PEM, from `extauth keygen --assertion`) or in existingSecret (keys assertion-key, assertion-previous-key-N); the chart mounts them and sets assertion.keyFile and assertion.previousKeyFiles" $key) }}
{{- end }}
{{- $_ := unset $assertion $key }}
{{- end }}
{{- if and $assertion.enabled (not $assertion.issuer) }}
{{- fail "config.assertion.issuer is required with config.assertion.enabled: the tokens' iss, e.g. https://auth.example.com" }}
{{- end }}
{{- with include "extauth.assertionKeys" . | fromJsonArray }}
{{- $_ := set $assertion "keyFile" (first .).file }}
{{- $previous := list }}
{{- range rest . }}
{{- $previous = append $previous .file }}
{{- end }}
{{- with $previous }}
{{- $_ := set $assertion "previousKeyFiles" . }}
{{- end }}
{{- end }}
{{- if hasKey $cfg "assertion" }}
{{- $_ := set $cfg "assertion" $assertion }}
{{- end }}
{{- $session := get $cfg "session" | default dict }}
{{- if or $session.secrets $session.secretsFile }}
{{- fail "config.session.secrets/secretsFile: give session secrets as secrets.sessionSecrets or in existingSecret; the chart mounts them and sets session.secretsFile" }}
{{- end }}
{{- $_ := unset $session "secrets" }}
{{- $_ := set $session "secretsFile" (printf "%s/session-secrets" (include "extauth.secretsDir" .)) }}
{{- include "extauth.redisConfig" (dict "root" . "session" $session) }}
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


{{/*
session.store and session.redis from .Values.redis, written into the
session dict it is given. The chart owns these keys: passwords and the CA
are mounted files, and the NetworkPolicy follows the addresses. Values
that cannot work fail the render here rather than the pods at start.
*/}}
{{- define "extauth.redisConfig" -}}
{{- $root := .root }}
{{- $session := .session }}
{{- $r := $root.Values.redis }}
{{- $sentinel := $r.sentinel }}
{{- $tls := $r.tls }}
{{- if and $r.sessionStore (not $r.enabled) }}
{{- fail "redis.sessionStore: needs redis.enabled: true and the Redis to use (redis.address, or redis.sentinel)" }}
{{- end }}
{{- $store := ternary "redis" "cookie" (and $r.enabled $r.sessionStore) }}
{{- if and (hasKey $session "store") (ne (toString (get $session "store")) $store) }}
{{- fail (printf "config.session.store: the chart sets it from redis.enabled and redis.sessionStore (%q here); leave it out" $store) }}
{{- end }}
{{- $redis := get $session "redis" | default dict }}
{{- range $key := list "enabled" "address" "username" "password" "passwordFile" "db" "keyPrefix" "tls" "sentinel" }}
{{- if hasKey $redis $key }}
{{- fail (printf "config.session.redis.%s: set redis.* instead; the chart writes session.redis from them, with the passwords and the CA as mounted files" $key) }}
{{- end }}
{{- end }}
{{- if not $r.enabled }}
{{- if not $redis }}
{{- $_ := unset $session "redis" }}
{{- end }}
{{- else }}
{{- $_ := set $session "store" $store }}
{{- $_ := set $redis "enabled" true }}
{{- if $sentinel.masterName }}
{{- if not $sentinel.addresses }}
{{- fail "redis.sentinel.addresses: list the Sentinels (host:port) that know redis.sentinel.masterName" }}
{{- end }}
{{- $s := dict "masterName" $sentinel.masterName "addresses" $sentinel.addresses }}
{{- with include "extauth.redisSentinelPasswordFile" $root }}
{{- $_ := set $s "passwordFile" . }}
{{- end }}
{{- $_ := set $redis "sentinel" $s }}
{{- else }}
{{- if or $sentinel.addresses $sentinel.password $sentinel.existingSecretPasswordKey }}
{{- fail "redis.sentinel: set redis.sentinel.masterName with the Sentinels' addresses, or leave redis.sentinel empty" }}
{{- end }}
{{- if not $r.address }}
{{- fail "redis.address is required with redis.enabled: host:port of your Redis (or redis.sentinel.masterName and addresses)" }}
{{- end }}
{{- $_ := set $redis "address" $r.address }}
{{- end }}
{{- $_ := set $redis "db" (int $r.db) }}
{{- $_ := set $redis "keyPrefix" $r.keyPrefix }}
{{- with $r.username }}
{{- $_ := set $redis "username" . }}
{{- end }}
{{- if and $root.Values.existingSecret (not $r.existingSecret) (or $r.password $sentinel.password) }}
{{- fail "redis.password/redis.sentinel.password: with existingSecret the chart creates no Secret to hold them; put them in a Secret of yours and name it in redis.existingSecret" }}
{{- end }}
{{- with include "extauth.redisPasswordFile" $root }}
{{- $_ := set $redis "passwordFile" . }}
{{- end }}
{{- if $tls.enabled }}
{{- $t := dict "enabled" true }}
{{- with $tls.serverName }}
{{- $_ := set $t "serverName" . }}
{{- end }}
{{- if $tls.insecureSkipVerify }}
{{- $_ := set $t "insecureSkipVerify" true }}
{{- end }}
{{- if $tls.caSecret }}
{{- $_ := set $t "caFile" (printf "%s/ca.crt" (include "extauth.redisCADir" $root)) }}
{{- end }}
{{- $_ := set $redis "tls" $t }}
{{- else if or $tls.serverName $tls.insecureSkipVerify $tls.caSecret }}
{{- fail "redis.tls.serverName/insecureSkipVerify/caSecret: set redis.tls.enabled: true too" }}
{{- end }}
{{- $_ := set $session "redis" $redis }}
{{- end }}
{{- end }}
