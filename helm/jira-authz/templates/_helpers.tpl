{{/* Names: <release>-jira-authz unless the release name already contains the chart name. */}}
{{- define "jira-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jira-authz.fullname" -}}
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

{{- define "jira-authz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; `component` distinguishes authz, redis, gateway and test pods. */}}
{{- define "jira-authz.labels" -}}
helm.sh/chart: {{ include "jira-authz.chart" . }}
app.kubernetes.io/name: {{ include "jira-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jira-authz
{{- end }}

{{- define "jira-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jira-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of one component: (dict "ctx" $ "component" "authz") */}}
{{- define "jira-authz.componentSelector" -}}
{{ include "jira-authz.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jira-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jira-authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "jira-authz.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (toString (default .default .image.tag)) }}
{{- end }}
{{- end }}

{{- define "jira-authz.image" -}}
{{ include "jira-authz.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) }}
{{- end }}

{{/* Secret names: an existing one, or the one this chart generates. */}}
{{- define "jira-authz.redisSecretName" -}}
{{- default (printf "%s-redis" (include "jira-authz.fullname" .)) .Values.redis.bundled.auth.existingSecret }}
{{- end }}

{{- define "jira-authz.adminSecretName" -}}
{{- default (printf "%s-admin" (include "jira-authz.fullname" .)) .Values.admin.existingSecret }}
{{- end }}

{{- define "jira-authz.redisHost" -}}
{{- printf "%s-redis.%s.svc" (include "jira-authz.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "jira-authz.identityHeader" -}}
{{- default "contextUser" ((.Values.config).identity).header }}
{{- end }}

{{- define "jira-authz.contextPath" -}}
{{- trimSuffix "/" (default "" ((.Values.config).auth).context_path) }}
{{- end }}

{{/*
A random secret value that survives upgrades: reuse the key of the Secret already in the
cluster (lookup returns nothing under `helm template`/lint, then a new value is generated).
(dict "ctx" $ "name" <secret name> "key" <key> "length" <n>)
*/}}
{{- define "jira-authz.persistentRandom" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing (hasKey ($existing.data | default dict) .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/*
The service's config.yaml: the user's `config` values plus the keys the chart owns.
*/}}
{{- define "jira-authz.configYaml" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := set $cfg "listen" (dict
      "check" (printf "0.0.0.0:%d" (int .Values.service.checkPort))
      "check_http1" (printf "0.0.0.0:%d" (int .Values.service.checkHttp1Port))
      "admin" (printf "0.0.0.0:%d" (int .Values.service.adminPort))
      "metrics" (printf "0.0.0.0:%d" (int .Values.service.metricsPort))) }}
{{- $redis := deepCopy ($cfg.redis | default dict) }}
{{- if .Values.redis.bundled.enabled }}
{{- /* The password-bearing URL comes from the environment (JIRA_AUTHZ_REDIS_URL); this is the
       same address without credentials, for readers of the ConfigMap. */}}
{{- $_ := set $redis "url" (printf "redis://%s:6379/0" (include "jira-authz.redisHost" .)) }}
{{- else if .Values.redis.external.url }}
{{- $_ := set $redis "url" .Values.redis.external.url }}
{{- end }}
{{- $_ := set $cfg "redis" $redis }}
{{- $identity := deepCopy ($cfg.identity | default dict) }}
{{- if .Values.upstreamAuthorization.existingSecret }}
{{- $_ := set $identity "upstream_authorization_file" (printf "/etc/jira-authz/upstream/%s" .Values.upstreamAuthorization.secretKey) }}
{{- end }}
{{- $_ := set $cfg "identity" $identity }}
{{- if .Values.webhooks.url }}
{{- if not .Values.webhooks.existingSecret }}
{{- fail "webhooks.url needs webhooks.existingSecret (the HMAC signing secret)" }}
{{- end }}
{{- $hooks := deepCopy ($cfg.webhooks | default dict) }}
{{- $_ := set $hooks "url" .Values.webhooks.url }}
{{- $_ := set $hooks "secret_file" (printf "/etc/jira-authz/webhooks/%s" .Values.webhooks.secretKey) }}
{{- $_ := set $cfg "webhooks" $hooks }}
{{- end }}
{{- $admin := dict "token_file" (printf "/etc/jira-authz/admin/%s" .Values.admin.secretKey) }}
{{- if .Values.admin.tls.enabled }}
{{- $_ := set $admin "tls_cert_file" "/etc/jira-authz/admin-tls/tls.crt" }}
{{- $_ := set $admin "tls_key_file" "/etc/jira-authz/admin-tls/tls.key" }}
{{- $_ := set $admin "client_ca_file" "/etc/jira-authz/admin-tls/ca.crt" }}
{{- end }}
{{- $_ := set $cfg "admin" $admin }}
{{- if .Values.console.enabled }}
{{- $c := .Values.console }}
{{- $jira := $c.jiraUrl }}
{{- if and (not $jira) .Values.gateway.enabled }}
{{- $jira = printf "http://%s:%d" .Values.gateway.jira.host (int .Values.gateway.jira.port) }}
{{- end }}
{{- $_ := set $cfg "console" (merge (dict
      "listen" (printf "0.0.0.0:%d" (int $c.port))
      "path_prefix" $c.pathPrefix
      "jira_url" (required "console.jiraUrl: Jira's upstream address is needed (or enable the gateway)" $jira)
      "admin_group" $c.adminGroup
      "session_seconds" $c.sessionSeconds
      "recheck_seconds" $c.recheckSeconds
      "cookie_secure" $c.cookieSecure) (deepCopy ($cfg.console | default dict))) }}
{{- end }}
{{- /* Drop empty sections so the file shows only what differs from the server defaults. */}}
{{- range $k, $v := $cfg }}
{{- if and (kindIs "map" $v) (eq (len $v) 0) }}
{{- $_ := unset $cfg $k }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Check ports beyond the first, one per extra worker: a list of dicts {name, port}.
Fails when they would take the admin or metrics port, or when Istio (one port) is enabled.
*/}}
{{- define "jira-authz.extraCheckPorts" -}}
{{- $n := int .Values.workers }}
{{- $base := int .Values.service.checkPort }}
{{- $out := list }}
{{- range $i := until $n }}
{{- if $i }}
{{- $p := add $base $i }}
{{- if or (eq (int $p) (int $.Values.service.adminPort)) (eq (int $p) (int $.Values.service.metricsPort)) }}
{{- fail (printf "workers=%d takes ports %d..%d, which include service.adminPort or service.metricsPort: move them" $n $base (add $base (sub $n 1))) }}
{{- end }}
{{- $out = append $out (dict "name" (printf "grpc-check-%d" $i) "port" $p) }}
{{- end }}
{{- end }}
{{- if and (gt $n 1) $.Values.istio.authorizationPolicy.enabled }}
{{- fail "workers > 1 with istio.authorizationPolicy.enabled: Istio's ext_authz provider reaches one port only; keep workers: 1 and scale replicas" }}
{{- end }}
{{- toJson (dict "ports" $out) }}
{{- end }}

{{/*
The HTTP/1.1 Check ports (listen.check_http1, behind Envoy's grpc_http1_reverse_bridge), one
per worker: worker i listens on checkHttp1Port + i. A list of dicts {name, port}, worker 0's
first. Fails when one would take a gRPC Check, admin, metrics or console port.
*/}}
{{- define "jira-authz.checkHttp1Ports" -}}
{{- $n := int .Values.workers }}
{{- $base := int .Values.service.checkHttp1Port }}
{{- $grpc := int .Values.service.checkPort }}
{{- $taken := list (int .Values.service.adminPort) (int .Values.service.metricsPort) }}
{{- if .Values.console.enabled }}
{{- $taken = append $taken (int .Values.console.port) }}
{{- end }}
{{- $out := list }}
{{- range $i := until $n }}
{{- $p := int (add $base $i) }}
{{- if or (has $p $taken) (and (ge $p $grpc) (lt $p (int (add $grpc $n)))) }}
{{- fail (printf "workers=%d: the HTTP/1.1 Check ports %d..%d overlap the gRPC Check ports %d..%d or service.adminPort, service.metricsPort, console.port: move service.checkHttp1Port" $n $base (add $base (sub $n 1)) $grpc (add $grpc (sub $n 1))) }}
{{- end }}
{{- $out = append $out (dict "name" (ternary "http-check" (printf "http-check-%d" $i) (eq $i 0)) "port" $p) }}
{{- end }}
{{- toJson (dict "ports" $out) }}
{{- end }}
