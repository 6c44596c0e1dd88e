#!/bin/bash
# Creates the SCRAM users and ACLs (idempotent: run again after changing a password).
#   elimu     the engine (workers, API): every topic, its consumer groups and transactional ids
#   producer  outside producers: WRITE and DESCRIBE on the four public input topics, nothing else
# Run by the compose service kafka-setup as admin; by hand:
#   docker compose run --rm kafka-setup
set -euo pipefail
: "${ELIMU_KAFKA_PASSWORD:?set ELIMU_KAFKA_PASSWORD}"
: "${KAFKA_PRODUCER_PASSWORD:?set KAFKA_PRODUCER_PASSWORD}"
bootstrap="${KAFKA_BOOTSTRAP:-kafka:9092}"
bin="${KAFKA_HOME:-/opt/kafka}/bin"
admin=(--bootstrap-server "$bootstrap" --command-config "${KAFKA_ADMIN_CONFIG:-/deploy/kafka/admin.properties}")

for user in elimu producer; do
  var=$([ "$user" = elimu ] && echo ELIMU_KAFKA_PASSWORD || echo KAFKA_PRODUCER_PASSWORD)
  "$bin/kafka-configs.sh" "${admin[@]}" --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${!var}]"
done

# The engine. It is also a super user (server.properties); these grants are what it uses, so
# removing it from super.users leaves it working without the power to change ACLs or users.
"$bin/kafka-acls.sh" "${admin[@]}" --add --allow-principal User:elimu --operation All \
  --topic '*' --group '*' --transactional-id '*'
"$bin/kafka-acls.sh" "${admin[@]}" --add --allow-principal User:elimu \
  --operation Create --operation Describe --operation DescribeConfigs --operation IdempotentWrite --cluster

# Outside producers: literal names (not prefixes), so no internal topic (user-commands,
# elimu-broadcast, elimu-referrals, ...) and no output topic can be written or read.
for topic in behavior-events job-postings application-status user-profiles; do
  "$bin/kafka-acls.sh" "${admin[@]}" --add --allow-principal User:producer \
    --operation Write --operation Describe --topic "$topic" --resource-pattern-type literal
done
"$bin/kafka-acls.sh" "${admin[@]}" --list
