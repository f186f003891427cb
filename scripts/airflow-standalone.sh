#!/usr/bin/env bash
# Airflow standalone (api-server, scheduler, dag-processor, triggerer) on 127.0.0.1:8080 for this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
export AIRFLOW_HOME=${AIRFLOW_HOME:-$PWD/var/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$PWD/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=${AIRFLOW__API__PORT:-8080}
# workers reach the task execution API on the same server: follow a changed port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://127.0.0.1:$AIRFLOW__API__PORT/execution/}
export GOLDEN_HOME=${GOLDEN_HOME:-/var/lib/golden-image}
export PATH=$PWD/.venv/bin:$PATH
mkdir -p "$AIRFLOW_HOME"
# the bake pools the family DAGs name (a task in a missing pool is never scheduled); standalone
# migrates too, but the pools need the tables first
airflow db migrate >/dev/null
golden pools
echo "Airflow UI: http://127.0.0.1:$AIRFLOW__API__PORT (user admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
trap - INT   # let Ctrl-C / kill -INT reach airflow so it stops all of its children
exec airflow standalone
