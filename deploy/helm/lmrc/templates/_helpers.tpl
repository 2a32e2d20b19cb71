{{/* Names, labels and the settings every service shares. */}}

{{- define "lmrc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lmrc.fullname" -}}
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

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "lmrc.componentName" -}}
{{- printf "%s-%s" (include "lmrc.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lmrc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "lmrc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lmrc
{{- end }}

{{- define "lmrc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lmrc.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "lmrc.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image (default .root.Chart.AppVersion .root.Values.image.tag) }}
{{- end }}

{{- define "lmrc.secretName" -}}
{{- default (printf "%s-credentials" (include "lmrc.fullname" .)) .Values.credentials.existingSecret }}
{{- end }}

{{/* The Secret the topic Job reads: a hook of its own, made before the Job and deleted after it
(success or failure), since the chart's ordinary Secret does not exist yet at pre-install. */}}
{{- define "lmrc.hookSecretName" -}}
{{- default (printf "%s-credentials-hook" (include "lmrc.fullname" .)) .Values.credentials.existingSecret }}
{{- end }}

{{/* The services' credentials as files: the Secret's keys under the settings' variable names. */}}
{{- define "lmrc.credentialFiles" -}}
- key: kafka-sasl-username
  path: KAFKA_SASL_USERNAME
- key: kafka-sasl-password
  path: KAFKA_SASL_PASSWORD
- key: tgi-api-token
  path: CLASSIFIER_TGI_API_TOKEN
- key: falkordb-username
  path: SINK_FALKORDB_USERNAME
- key: falkordb-password
  path: SINK_FALKORDB_PASSWORD
{{- end }}

{{/* True when the services read credentials from mounted files. */}}
{{- define "lmrc.credentialsAsFiles" -}}
{{- if and (include "lmrc.hasCredentials" .) .Values.credentials.asFiles }}true{{ end }}
{{- end }}

{{/* True when the chart has a Secret to reference (an existing one or one it writes). */}}
{{- define "lmrc.hasCredentials" -}}
{{- $c := .Values.credentials }}
{{- if or $c.existingSecret $c.kafkaSaslUsername $c.kafkaSaslPassword $c.tgiApiToken $c.falkordbUsername $c.falkordbPassword }}true{{ end }}
{{- end }}

{{- define "lmrc.secretEnv" -}}
{{- if and (include "lmrc.hasCredentials" .root) (or .hook (not .root.Values.credentials.asFiles)) }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ ternary (include "lmrc.hookSecretName" .root) (include "lmrc.secretName" .root) (default false .hook) }}
      key: {{ .key }}
      optional: {{ .optional }}
{{- end }}
{{- end }}

{{/* KAFKA_* variables (lmrc/runtime/settings.py, KafkaSettings); dict "root", "hook" (the Job). */}}
{{- define "lmrc.kafkaEnv" -}}
{{- $root := .root -}}
{{- $kafka := $root.Values.kafka -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ $kafka.bootstrapServers | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
- name: KAFKA_COMPRESSION_TYPE
  value: {{ $kafka.compressionType | quote }}
{{- if $kafka.saslMechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $kafka.saslMechanism | quote }}
{{- include "lmrc.secretEnv" (dict "root" $root "hook" .hook "name" "KAFKA_SASL_USERNAME" "key" "kafka-sasl-username" "optional" false) }}
{{- include "lmrc.secretEnv" (dict "root" $root "hook" .hook "name" "KAFKA_SASL_PASSWORD" "key" "kafka-sasl-password" "optional" false) }}
{{- end }}
{{- if $kafka.tls.secretName }}
- name: KAFKA_SSL_CA_LOCATION
  value: /etc/lmrc/kafka-tls/ca.crt
{{- if $kafka.tls.clientCertificate }}
- name: KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/lmrc/kafka-tls/tls.crt
- name: KAFKA_SSL_KEY_LOCATION
  value: /etc/lmrc/kafka-tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* <PREFIX>_* runtime variables every service has (ServiceSettings). */}}
{{- define "lmrc.runtimeEnv" -}}
- name: {{ .prefix }}_HTTP_PORT
  value: {{ .root.Values.metricsPort | quote }}
- name: {{ .prefix }}_MAX_BATCH_SIZE
  value: {{ .values.maxBatchSize | quote }}
- name: {{ .prefix }}_SERVICE_NAME
  value: {{ .component | quote }}
- name: {{ .prefix }}_GROUP_ID
  value: {{ include "lmrc.groupId" . | quote }}
{{- range $name, $value := .values.env }}
- name: {{ printf "%s_%s" $.prefix $name | upper }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{- define "lmrc.tgiUrl" -}}
{{- if .Values.tgi.enabled }}
{{- printf "http://%s:80" (include "lmrc.componentName" (dict "root" . "component" "tgi")) }}
{{- else }}
{{- required "classifier.tgi.url is required when tgi.enabled is false" .Values.classifier.tgi.url }}
{{- end }}
{{- end }}

{{/* Each service's own variables. */}}
{{- define "lmrc.env.annotator" -}}
{{- $v := .Values.annotator -}}
- name: ANNOTATOR_INPUT_TOPIC
  value: {{ .Values.topics.texts | quote }}
- name: ANNOTATOR_OUTPUT_TOPIC
  value: {{ .Values.topics.documents | quote }}
- name: ANNOTATOR_DEAD_LETTER_TOPIC
  value: {{ printf "%s.dead-letter" .Values.topics.texts | quote }}
- name: ANNOTATOR_ENGINE
  value: {{ $v.engine | quote }}
{{- if $v.modelVolume }}
- name: ANNOTATOR_TAGGER_DIR
  value: /models/annotator
{{- end }}
{{- end }}

{{- define "lmrc.env.proposer" -}}
{{- $v := .Values.proposer -}}
- name: PROPOSER_INPUT_TOPIC
  value: {{ .Values.topics.documents | quote }}
- name: PROPOSER_OUTPUT_TOPIC
  value: {{ .Values.topics.candidates | quote }}
- name: PROPOSER_DEAD_LETTER_TOPIC
  value: {{ printf "%s.dead-letter" .Values.topics.documents | quote }}
- name: PROPOSER_EXECUTION_PROVIDER
  value: {{ default (ternary "cuda" "cpu" $v.gpu.enabled) $v.executionProvider | quote }}
{{- if $v.recallTarget }}
- name: PROPOSER_RECALL_TARGET
  value: {{ $v.recallTarget | quote }}
{{- end }}
{{- if $v.modelVolume }}
- name: PROPOSER_ARTIFACT_DIR
  value: /models/proposer
{{- end }}
{{- with $v.ensemble.members }}
{{- $dirs := list }}
{{- range $index, $_ := . }}
{{- $dirs = append $dirs (printf "/models/ensemble/%d" $index) }}
{{- end }}
- name: PROPOSER_ENSEMBLE
  value: {{ toJson $dirs | quote }}
- name: PROPOSER_ENSEMBLE_WEIGHT
  value: {{ $v.ensemble.weight | quote }}
- name: PROPOSER_RELATION_THRESHOLD
  value: {{ $v.ensemble.relationThreshold | quote }}
{{- end }}
{{- end }}

{{- define "lmrc.env.classifier" -}}
{{- $v := .Values.classifier -}}
- name: CLASSIFIER_INPUT_TOPIC
  value: {{ .Values.topics.candidates | quote }}
- name: CLASSIFIER_OUTPUT_TOPIC
  value: {{ .Values.topics.relations | quote }}
- name: CLASSIFIER_DEAD_LETTER_TOPIC
  value: {{ printf "%s.dead-letter" .Values.topics.candidates | quote }}
- name: CLASSIFIER_TGI_URL
  value: {{ include "lmrc.tgiUrl" . | quote }}
{{- if $v.tgi.adapterId }}
- name: CLASSIFIER_TGI_ADAPTER_ID
  value: {{ $v.tgi.adapterId | quote }}
{{- end }}
- name: CLASSIFIER_TGI_MAX_CONCURRENCY
  value: {{ $v.tgi.maxConcurrency | quote }}
- name: CLASSIFIER_TGI_TIMEOUT_SECONDS
  value: {{ $v.tgi.timeoutSeconds | quote }}
{{- include "lmrc.secretEnv" (dict "root" . "name" "CLASSIFIER_TGI_API_TOKEN" "key" "tgi-api-token" "optional" true) }}
{{- if $v.modelVolume }}
- name: CLASSIFIER_ARTIFACT_DIR
  value: /models/classifier
{{- end }}
{{- end }}

{{- define "lmrc.env.sink" -}}
{{- $store := .Values.sink.store -}}
- name: SINK_INPUT_TOPIC
  value: {{ .Values.topics.relations | quote }}
- name: SINK_DEAD_LETTER_TOPIC
  value: {{ printf "%s.dead-letter" .Values.topics.relations | quote }}
- name: SINK_STORE_BACKEND
  value: {{ $store.backend | quote }}
{{- if eq $store.backend "falkordb" }}
- name: SINK_FALKORDB_HOST
  value: {{ $store.falkordb.host | quote }}
- name: SINK_FALKORDB_PORT
  value: {{ $store.falkordb.port | quote }}
- name: SINK_FALKORDB_GRAPH
  value: {{ $store.falkordb.graph | quote }}
- name: SINK_FALKORDB_SSL
  value: {{ $store.falkordb.ssl | quote }}
{{- include "lmrc.secretEnv" (dict "root" . "name" "SINK_FALKORDB_USERNAME" "key" "falkordb-username" "optional" true) }}
{{- include "lmrc.secretEnv" (dict "root" . "name" "SINK_FALKORDB_PASSWORD" "key" "falkordb-password" "optional" true) }}
{{- else }}
- name: SINK_LADYBUG_PATH
  value: /data/graph.lbug
{{- end }}
{{- end }}

{{/* A service's consumer group: <consumerGroupPrefix>-<service>. */}}
{{- define "lmrc.groupId" -}}
{{- printf "%s-%s" .root.Values.consumerGroupPrefix .component }}
{{- end }}

{{- define "lmrc.inputTopic" -}}
{{- $topics := dict "annotator" .root.Values.topics.texts "proposer" .root.Values.topics.documents "classifier" .root.Values.topics.candidates "sink" .root.Values.topics.relations }}
{{- get $topics .component }}
{{- end }}
