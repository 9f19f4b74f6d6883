#!/usr/bin/env bash
# `make test-compat`: a smoke set on every supported Airflow minor, each in its own uv virtualenv
# under .compat/ (Airflow and providers resolved for that version; this package installed from the
# checkout). The smoke set: provider discovery and the health plugin, the UI field declarations on
# a real api-server, the hook, the keeper operator and the deferrable sensor on real components
# (api-server, scheduler, dag-processor, triggerer), metrics through Airflow's Stats, and the
# keeper's unit tests, and store sealed_variable (its store tests and its real-components test). AIRFLOW_VERSIONS="3.2.2 3.3.2" by default.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-$(command -v uv || echo "$PWD/.tools/bin/uv")}"
PYTHON="${PYTHON:-python3}"
VERSIONS="${AIRFLOW_VERSIONS:-3.2.2 3.3.2}"
SMOKE=(
  tests/test_provider_discovery.py
  tests/test_keeper.py
  tests/test_metrics.py
  tests/test_http_provider.py
  "tests/airflow/test_real_airflow.py::test_hook_meta_declares_the_fields_of_every_connection_type"
  "tests/airflow/test_real_airflow.py::test_consumer_dag_defers_refreshes_in_the_triggerer_and_calls_every_vendor"
  "tests/airflow/test_real_airflow.py::test_second_run_uses_the_persisted_token_not_the_connection_seed"
  tests/stores/test_sealed_variable_store.py
  tests/airflow/test_sealed_store_real.py
)
summary=()
failed=0
for version in $VERSIONS; do
  venv=".compat/airflow-$version"
  echo "== Airflow $version ($venv) =="
  [ -x "$venv/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$venv"
  # The web stack at uv.lock's versions: an unconstrained resolve of an older Airflow today picks a
  # cadwyn/fastapi/pydantic that its api-server cannot start with (Airflow's own constraint files are
  # not on PyPI), whatever this package does.
  constraints="$venv/web-stack-constraints.txt"
  "$UV" export --frozen --no-hashes --no-emit-project --all-groups \
    | grep -E '^(fastapi|cadwyn|starlette|pydantic|pydantic-core)==' | sed 's/ *;.*//' > "$constraints"
  "$UV" pip install --quiet --compile-bytecode --python "$venv/bin/python" -c "$constraints" \
    "apache-airflow==$version" apache-airflow-providers-http apache-airflow-providers-smtp \
    pytest pytest-timeout pytest-xdist hypothesis cryptography statsd authlib \
    -e .
  installed=$("$venv/bin/python" -c "import airflow; print(airflow.__version__)")
  [ "$installed" = "$version" ] || { echo "Airflow $installed installed, not $version" >&2; exit 1; }
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/tokenrefresh-compat.XXXXXX")
  start=$(date +%s)
  if TMPDIR="$scratch" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      --basetemp="$scratch/pytest" "${SMOKE[@]}"; then
    summary+=("Airflow $version: smoke set passed ($(( $(date +%s) - start ))s)")
    rm -rf "$scratch"
  else
    summary+=("Airflow $version: FAILED (files kept in $scratch)")
    failed=1
  fi
done
printf '%s\n' "${summary[@]}"
exit $failed
