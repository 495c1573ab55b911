{{/*
Names and labels. The full name is the release name when it already contains
the chart name, so `helm install rollbackd` in namespace rollbackd yields the
Service rollbackd.rollbackd.svc the Alertmanager snippet points at.
*/}}
{{- define "rollbackd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rollbackd.fullname" -}}
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

{{- define "rollbackd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rollbackd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rollbackd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollbackd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rollbackd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rollbackd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rollbackd.leaseName" -}}
{{- default (include "rollbackd.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The image by digest when one is given (immutable), else by tag. */}}
{{- define "rollbackd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: \"latest\" is mutable; use a version tag or image.digest" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Mount points the container and the config agree on. */}}
{{- define "rollbackd.configDir" -}}/etc/rollbackd{{- end }}
{{- define "rollbackd.secretsDir" -}}/var/run/secrets/rollbackd{{- end }}
{{- define "rollbackd.journalDir" -}}/var/lib/rollbackd{{- end }}

{{/*
The secrets the chart knows how to wire: values key, the config section path
and *_file key it fills, and the file name under the secrets directory.
`generated` is the suffix of the Secret the chart creates (random token,
kept across upgrades) when the values say `create: true` and name no
existingSecret.
Rendered as YAML because templates can only return strings.
*/}}
{{- define "rollbackd.secretSpecs" -}}
- value: webhookBearerToken
  section: [webhook]
  key: bearer_token_file
  file: webhook-bearer-token
  generated: webhook-token
- value: operatorToken
  section: [webhook]
  key: operator_token_file
  file: webhook-operator-token
  generated: operator-token
- value: pagerdutyRoutingKey
  section: [notify, pagerduty]
  key: routing_key_file
  file: pagerduty-routing-key
  required: true
- value: slackWebhookUrl
  section: [notify, slack]
  key: webhook_url_file
  file: slack-webhook-url
  required: true
- value: prometheusBearerToken
  section: [prometheus]
  key: bearer_token_file
  file: prometheus-bearer-token
{{- end }}

{{/*
The secrets that are set, as a list of specs plus their values entry:
secretName/secretKey to mount, and `create` when the chart makes the Secret.
*/}}
{{- define "rollbackd.enabledSecrets" -}}
{{- $enabled := list }}
{{- range $spec := include "rollbackd.secretSpecs" . | fromYamlArray }}
{{- $secret := get $.Values.secrets $spec.value }}
{{- if $secret.existingSecret }}
{{- $enabled = append $enabled (merge (dict "secretName" $secret.existingSecret "secretKey" $secret.key "create" false) $spec) }}
{{- else if and $spec.generated $secret.create }}
{{- $name := printf "%s-%s" (include "rollbackd.fullname" $) $spec.generated }}
{{- $enabled = append $enabled (merge (dict "secretName" $name "secretKey" $secret.key "create" true) $spec) }}
{{- end }}
{{- end }}
{{- $channels := dig "notify" "channels" dict (default dict .Values.config) }}
{{- $fileKeys := dict "pagerduty" "routing_key_file" "slack" "webhook_url_file" "webhook" "bearer_token_file" }}
{{- range $name, $secret := (default dict .Values.secrets.channels) }}
{{- $channel := get $channels $name }}
{{- if not (kindIs "map" $channel) }}
{{- fail (printf "secrets.channels.%s: config.notify.channels has no channel %s" $name $name) }}
{{- end }}
{{- $key := get $fileKeys (toString (get $channel "type")) }}
{{- if not $key }}
{{- fail (printf "secrets.channels.%s: a channel of type %q takes no secret" $name (toString (get $channel "type"))) }}
{{- end }}
{{- $enabled = append $enabled (dict "value" (printf "channels.%s" $name) "section" (list "notify" "channels" $name) "key" $key "file" (printf "channel-%s" $name) "secretName" $secret.existingSecret "secretKey" $secret.key "create" false) }}
{{- end }}
{{- toYaml $enabled }}
{{- end }}

{{/* One enabled secret by values key ("webhookBearerToken"), or an empty map. */}}
{{- define "rollbackd.enabledSecret" -}}
{{- $found := dict }}
{{- range $spec := include "rollbackd.enabledSecrets" .root | fromYamlArray }}
{{- if eq $spec.value $.value }}
{{- $found = $spec }}
{{- end }}
{{- end }}
{{- toYaml $found }}
{{- end }}

{{/*
rollbackd refuses to start without API credentials unless the config opens
the API on purpose: say so at install time instead of in a crash loop.
*/}}
{{- define "rollbackd.checkApiAuth" -}}
{{- $webhook := dig "webhook" dict (default dict .Values.config) }}
{{- $webhookSecret := include "rollbackd.enabledSecret" (dict "root" . "value" "webhookBearerToken") | fromYaml }}
{{- if not (or $webhookSecret (get $webhook "basic_auth") (get $webhook "allow_unauthenticated")) }}
{{- fail "the API needs credentials: keep secrets.webhookBearerToken.create: true (a random token), set secrets.webhookBearerToken.existingSecret, or set config.webhook.allow_unauthenticated: true on purpose" }}
{{- end }}
{{- end }}

{{/*
Fails when the user's config sets a key the chart owns to a different value:
silently overriding it would lose the user's intent.
*/}}
{{- define "rollbackd.checkManaged" -}}
{{- $user := .user }}
{{- range $section, $keys := .managed }}
{{- $userSection := get $user $section }}
{{- if kindIs "map" $userSection }}
{{- range $key, $value := $keys }}
{{- if and (hasKey $userSection $key) (not (kindIs "map" $value)) (ne (toString (get $userSection $key)) (toString $value)) }}
{{- fail (printf "config.%s.%s is set by the chart to %q; remove it from config (see the comments in values.yaml)" $section $key (toString $value)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A channel whose section is in the config cannot start without its secret
(rollbackd would refuse the config at start-up): say so at install time.
*/}}
{{- define "rollbackd.checkRequiredSecrets" -}}
{{- range $spec := include "rollbackd.secretSpecs" . | fromYamlArray }}
{{- if $spec.required }}
{{- $node := $.config }}
{{- range $name := $spec.section }}
{{- if kindIs "map" $node }}
{{- $node = get $node $name }}
{{- end }}
{{- end }}
{{- if and (kindIs "map" $node) (not (hasKey $node $spec.key)) (not (get $.Values.secrets $spec.value).existingSecret) }}
{{- fail (printf "config.%s is set but has no secret: set secrets.%s.existingSecret" (join "." $spec.section) $spec.value) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
rollbackd.yaml: the user's `config` with the keys the chart owns filled in.
*/}}
{{- define "rollbackd.config" -}}
{{- $config := deepCopy (default dict .Values.config) }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "leaderElection.enabled must be true when replicaCount > 1: two active replicas would both roll back" }}
{{- end }}
{{- $managed := dict
  "webhook" (dict "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)))
  "journal" (dict "path" (printf "%s/journal.sqlite" (include "rollbackd.journalDir" .)))
  "leader_election" (dict
    "enabled" .Values.leaderElection.enabled
    "namespace" .Release.Namespace
    "lease_name" (include "rollbackd.leaseName" .))
}}
{{- include "rollbackd.checkManaged" (dict "user" $config "managed" $managed) }}
{{- $config = mustMergeOverwrite $config $managed }}
{{- include "rollbackd.checkRequiredSecrets" (dict "Values" .Values "config" $config) }}
{{- include "rollbackd.checkApiAuth" . }}
{{- range $spec := include "rollbackd.enabledSecrets" . | fromYamlArray }}
{{- $node := $config }}
{{- $where := "config" }}
{{- range $name := $spec.section }}
{{- $where = printf "%s.%s" $where $name }}
{{- $child := get $node $name }}
{{- if not $child }}
{{- $child = dict }}
{{- $_ := set $node $name $child }}
{{- end }}
{{- if not (kindIs "map" $child) }}
{{- fail (printf "%s must be a mapping" $where) }}
{{- end }}
{{- $node = $child }}
{{- end }}
{{- if hasKey $node $spec.key }}
{{- fail (printf "%s.%s is set by the chart from secrets.%s; remove it from config" $where $spec.key $spec.value) }}
{{- end }}
{{- $_ := set $node $spec.key (printf "%s/%s" (include "rollbackd.secretsDir" $) $spec.file) }}
{{- end }}
{{- toYaml $config }}
{{- end }}
