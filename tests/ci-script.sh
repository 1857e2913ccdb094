#!/usr/bin/env bash
# The script czctl exists for, as users write it in CI (README, "In CI"), verbatim but for the
# names: teleport the namespace, export a workload's environment, run the tests with it, close
# everything. tests/sessions.rs runs it as a CI job would: no terminal, KUBECONFIG set, czctl
# on PATH, in a private mount namespace whose /etc/hosts is a scratch file. Its "npm test" is
# run_tests below: requests by name and the values the env file brought.
set -eu
run_tests() {
	curl -sf http://echo.demo:8080/ci | grep -q '"path":"/ci"'
	curl -sf http://api.demo/metrics | grep -q '"namespace":"demo"'
	test "$GREETING" = 'hello from the cluster'
	curl -sf "http://$ECHO_SERVICE_HOST:$ECHO_SERVICE_PORT/links" | grep -q '"path":"/links"'
	czctl session list -o json >sessions.json
	echo "tests passed"
}

czctl namespace teleport demo
czctl deployment teleport echo -n demo -f echo.env
set -a; . ./echo.env; set +a; run_tests
czctl session close --all
