#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis, every check on
# (opt-in: not part of `cargo test`; needs Python 3 and network access to PyPI once).
#
#   scripts/schemathesis.sh [extra `st run` arguments, e.g. --max-examples 200 --seed 1]
#
# It builds `claim-ledger`, starts `claim-ledger demo` (simulator + watcher + ledger + API,
# with a live scenario and signed checkpoints) on 127.0.0.1 with a free port and a fresh
# directory, waits until it is ready, runs
#
#   st run <api>/openapi.json --checks all -H 'Authorization: Bearer <token>' ...
#
# and stops the service. The exit status is schemathesis's (0: nothing found).
#
# What the run is told beyond the document (written next to it under a temporary
# directory):
# * a hooks file: generated requests the document calls valid are kept to the orderings
#   JSON Schema cannot state, which the document lists in each operation's
#   `x-claim-ledger-ordered` (`from_seq <= to_seq`, `seq <= tree_size`,
#   `from_size <= to_size`);
# * a config file: `POST /v1/identity/check` and `GET /readyz` may answer 503 (the
#   documented not_ready: `LEDGER_BEHIND` when `min_seq` is past the head), which the
#   not_a_server_error check would otherwise count as a failure; and dictionaries of the
#   pods, claims and sandboxes the demo has bound when the run starts, drawn for half of
#   the pod uids, names and namespaces, so that bindings and allowed checks are exercised.
#
# Environment:
#   ST                 the `st` executable to use (default: a venv with schemathesis 4,
#                      created under ${SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/claim-ledger-schemathesis})
#   CARGO_TARGET_DIR   where cargo builds (default: ./target)
#   PROFILE            cargo profile to build and run (default: dev)
#   KEEP               1 to keep the temporary directory (demo log, config, JUnit and
#                      NDJSON reports)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
profile=${PROFILE:-dev}
target=${CARGO_TARGET_DIR:-$root/target}
case $profile in
dev) bin=$target/debug/claim-ledger ;;
*) bin=$target/$profile/claim-ledger ;;
esac

echo "== building claim-ledger ($profile)" >&2
(cd "$root" && cargo build --profile "$profile" --bin claim-ledger)

if [[ -n ${ST:-} ]]; then
    st=$ST
else
    venv=${SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/claim-ledger-schemathesis}
    if [[ ! -x $venv/bin/st ]]; then
        echo "== installing schemathesis into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet 'schemathesis>=4,<5'
    fi
    st=$venv/bin/st
fi
echo "== $("$st" --version)" >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/claim-ledger-schemathesis.XXXXXX")
demo_pid=
cleanup() {
    if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -INT "$demo_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$demo_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "== kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

echo "== starting claim-ledger demo in $work" >&2
"$bin" demo --db "$work/demo" --listen 127.0.0.1:0 --step-ms 4000 >"$work/demo.log" 2>&1 &
demo_pid=$!

api=
for _ in $(seq 300); do
    api=$(sed -n 's/^  API *\(http:\/\/[^ ]*\)$/\1/p' "$work/demo.log" | head -n 1)
    [[ -n $api ]] && break
    kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.log" >&2; exit 2; }
    sleep 0.1
done
[[ -n $api ]] || { echo "the demo printed no API address" >&2; cat "$work/demo.log" >&2; exit 2; }

python3 - "$api" <<'EOF' || { cat "$work/demo.log" >&2; exit 2; }
import sys, time, urllib.request, urllib.error
api = sys.argv[1]
for _ in range(600):
    try:
        with urllib.request.urlopen(api + "/readyz", timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except (urllib.error.URLError, OSError):
        pass
    time.sleep(0.1)
print("the demo never became ready", file=sys.stderr)
sys.exit(1)
EOF
token=$(tr -d '[:space:]' <"$work/demo/api-token")
echo "== $api is ready" >&2

cat >"$work/hooks.py" <<'EOF'
"""Keeps generated requests the document calls valid within the orderings it lists in
x-claim-ledger-ordered (JSON Schema cannot compare two parameters)."""
import schemathesis


def _flat(query):
    flat = {}
    for name, value in (query or {}).items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[name] = value
    return flat


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@schemathesis.hook
def filter_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return True
    definition = getattr(case.operation.definition, "raw", None) or {}
    pairs = definition.get("x-claim-ledger-ordered") or []
    query = _flat(case.query)
    for first, second in pairs:
        a, b = _int(query.get(first)), _int(query.get(second))
        if a is not None and b is not None and a > b:
            return False
    return True
EOF

# What the demo holds now (bound pods, their claims and sandboxes), so that some requests
# name real objects: bindings answered 200, checks answered allow.
python3 - "$api" "$token" >"$work/dictionaries.toml" <<'EOF' || { cat "$work/demo.log" >&2; exit 2; }
import json, sys, time, urllib.request
api, token = sys.argv[1], sys.argv[2]
request = urllib.request.Request(api + "/v1/state", headers={"Authorization": "Bearer " + token})
for _ in range(120):  # the scenario binds its first claims within seconds
    with urllib.request.urlopen(request, timeout=10) as response:
        state = json.load(response)
    if len(state["bindings"]) >= 2:  # one of them is a replaced pod: bound for a while
        break
    time.sleep(0.5)
values = {"pod_uids": set(), "pod_names": set(), "namespaces": set(),
          "claim_uids": set(), "sandbox_uids": set(), "sandbox_names": set()}
for binding in state["bindings"]:
    values["pod_uids"].add(binding["pod"]["uid"])
    values["pod_names"].add(binding["pod"]["name"])
    values["namespaces"].add(binding["pod"]["namespace"])
    values["sandbox_uids"].add(binding["sandbox"]["uid"])
    values["sandbox_names"].add(binding["sandbox"]["name"])
    if binding.get("claim"):
        values["claim_uids"].add(binding["claim"]["uid"])
bindings = {
    "path.pod_uid": "pod_uids",
    "body.pod_uid": "pod_uids",
    "body.pod_name": "pod_names",
    "body.namespace": "namespaces",
    "body.claim_uid": "claim_uids",
    "body.sandbox_uid": "sandbox_uids",
    "body.sandbox_name": "sandbox_names",
}
print("[parameters]")
for key, name in bindings.items():
    if values[name]:
        print(f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}')
for name, found in values.items():
    if found:
        print(f"\n[dictionaries.{name}]\nvalues = {json.dumps(sorted(found))}")
EOF

cat >"$work/schemathesis.toml" <<EOF
hooks = "$work/hooks.py"

[[operations]]
include-path = "/v1/identity/check"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

[[operations]]
include-path = "/readyz"
include-method = "GET"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
EOF
cat "$work/dictionaries.toml" >>"$work/schemathesis.toml"

echo "== st run $api/openapi.json --checks all $*" >&2
# One worker: schemathesis's coverage phase parses lambdas with `ast` from several threads,
# which Python 3.11 can fail at ("AST constructor recursion depth mismatch").
reports=()
[[ ${KEEP:-0} == 1 ]] && reports=(--report junit,ndjson --report-dir "$work/report")
status=0
(cd "$work" && "$st" --config-file "$work/schemathesis.toml" run "$api/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --workers 1 \
    ${reports[@]+"${reports[@]}"} \
    "$@") || status=$?
if [[ $status -ne 0 ]]; then
    echo "== schemathesis found problems (exit $status); the service's log:" >&2
    tail -n 50 "$work/demo.log" >&2
fi
exit "$status"
