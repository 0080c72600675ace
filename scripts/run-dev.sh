#!/usr/bin/env bash
# `make run`: migrate, fetch the model, then serve Django + Channels and (with REDIS_URL) a Celery
# worker, until Ctrl+C or SIGTERM stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG="${DEBUG:-1}"
PORT="${PORT:-8000}"
BIN=.venv/bin

$BIN/python manage.py migrate --noinput
# The checkpoint download shows a progress bar; if it fails the app still starts and says why.
$BIN/python manage.py prepare_model || echo "WARNING: the model is not ready; the pages say why." >&2

pids=()
stop() {
  trap - INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

if [ -n "${REDIS_URL:-}" ]; then
  # -B: the embedded beat runs the stale-job sweep (run one beat per deployment, not per worker).
  $BIN/celery -A webapp worker -B -Q gpu,default --concurrency 1 --loglevel INFO \
    --schedule "${DATA_DIR:-data}/celerybeat-schedule" &
  pids+=($!)
else
  echo "No REDIS_URL: embedding jobs run in a worker thread inside the web server."
fi
echo "Serving on http://127.0.0.1:${PORT}/  (first time: python manage.py createsuperuser, or sign up)"
$BIN/daphne -b 127.0.0.1 -p "$PORT" webapp.asgi:application &
pids+=($!)
wait -n "${pids[@]}"
