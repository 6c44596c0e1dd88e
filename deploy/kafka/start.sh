#!/bin/bash
# Formats the KRaft log dir on first start, creating the broker's own SCRAM user (admin) with it:
# SCRAM credentials live in the cluster metadata, so the first one must exist before the broker
# can authenticate to itself. Later starts find the dir formatted and keep what is there.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}"
: "${KAFKA_CLUSTER_ID:?set KAFKA_CLUSTER_ID}"
config="${KAFKA_CONFIG:-/deploy/kafka/server.properties}"
bin="${KAFKA_HOME:-/opt/kafka}/bin"
"$bin/kafka-storage.sh" format --ignore-formatted --cluster-id "$KAFKA_CLUSTER_ID" --config "$config" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]"
exec "$bin/kafka-server-start.sh" "$config" "$@"
