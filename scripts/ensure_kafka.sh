#!/usr/bin/env bash
# Make sure a Java 17+ runtime and Maven are installed for the embedded Apache Kafka broker
# (scripts/kafka_dist.py), and kcat for the tests that produce with a client not ours, then
# resolve the broker's pinned jars into the cache once. Run by `make run`, `make test`, `make soak`. On a machine where neither can be had, `make run` goes on with the Tansu
# broker (elimu up prints why); `make test` cannot, since its tests run on both brokers.
set -euo pipefail

java_ok() {
    command -v java >/dev/null 2>&1 || return 1
    local major
    major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
    [ -n "$major" ] && [ "$major" -ge 17 ]
}

missing=()
java_ok || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure_kafka: installing Debian's ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
            echo "ensure_kafka: apt-get install ${missing[*]} FAILED" >&2
            exit 1
        fi
    else
        echo "ensure_kafka: ${missing[*]} missing and cannot be installed here (needs root and apt-get)" >&2
        exit 1
    fi
fi

# The jars: resolved by Maven into the cache the first time, found there afterwards.
"${PYTHON:-python3}" -m scripts.kafka_dist
