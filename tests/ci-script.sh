#!/usr/bin/env bash
# What a CI job does with czctl: teleport a namespace in the background, run integration
# checks against cluster services by name, read the status as JSON, tear everything down and
# make sure nothing is left. Run by tests/sessions.rs inside a private mount namespace.
# Usage: ci-script.sh CZCTL KUBECONFIG
set -euo pipefail
czctl=$1
kubeconfig=$2
before=$(mktemp)
cp /etc/hosts "$before"

session=$("$czctl" namespace teleport demo --kubeconfig "$kubeconfig" --detach)
echo "teleport session: $session"

# Integration checks against two services by name.
curl -sf http://echo.demo:8080/ci | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["path"] == "/ci", d; print("echo answered from", d["pod"])'
curl -sf http://api.demo/metrics | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["namespace"] == "demo", d; print("api answered from", d["pod"])'

# The status names the connection curl made.
"$czctl" status "$session" -o json | python3 -c '
import json, sys
status = json.load(sys.stdin)
echo = [f for s in status["sessions"] for f in s["forwards"] if f["service"] == "demo/echo"][0]
assert echo["total_connections"] >= 1, echo
assert echo["last_pod"].startswith("echo-"), echo
print("status: demo/echo served", echo["total_connections"], "connection(s), last by", echo["last_pod"])
'

"$czctl" session close --all
"$czctl" session list -o json | python3 -c 'import json,sys; assert json.load(sys.stdin)["sessions"] == []'
cmp /etc/hosts "$before"
echo "hosts file restored"
