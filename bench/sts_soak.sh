#!/usr/bin/env bash
# Soak with temporary credentials: the emulator's STS issues 60-second tokens, snapgate assumes a
# role from a narrow key (AssumeRole, refreshed in the background with 20 s left), and jobs are
# submitted steadily for DURATION_S seconds. Prints the emulator's call counts by code (MPS and
# MNS: any InvalidSecurityToken.* / SecurityTokenExpired is a failed call), the jobs' final
# states and snapgate's credential metrics. Needs the debug binary (cargo build) and Postgres.
# Usage: bench/sts_soak.sh [DURATION_S=600] [RATE_PER_S=2]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION_S=${1:-600}
RATE=${2:-2}
BIN=target/debug/snapgate
EMU_PORT=19481
GW_PORT=19482
DB=snapgate_sts_soak
OUT=$(mktemp -d)
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
"$BIN" emulator --listen 127.0.0.1:$EMU_PORT --access-key testid:testsecret --sts-ttl-s 60 \
  --mns-queue soak --start-ms 100 --process-ms 500 >"$OUT/emulator.log" 2>&1 &
EMU_PID=$!
env -i PATH="$PATH" SNAPGATE_CONFIG_DIR=config \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
  SNAPGATE__HTTP__LISTEN=127.0.0.1:$GW_PORT SNAPGATE__AUTH__ENABLED=false \
  SNAPGATE__DATABASE__MIGRATE_ON_START=true \
  SNAPGATE__MPS__ENDPOINT=http://127.0.0.1:$EMU_PORT \
  SNAPGATE__MPS__MNS__ENDPOINT=http://127.0.0.1:$EMU_PORT SNAPGATE__MPS__MNS__QUEUE=soak \
  ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret \
  ALIBABA_CLOUD_ROLE_ARN=acs:ram::1234567890123456:role/snapgate \
  ALIBABA_CLOUD_STS_ENDPOINT=http://127.0.0.1:$EMU_PORT RUST_LOG=info \
  "$BIN" serve >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
trap 'kill $GW_PID $EMU_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do curl -fs http://127.0.0.1:$GW_PORT/readyz >/dev/null && break; sleep 1; done
END=$(( $(date +%s) + DURATION_S ))
i=0
while [ "$(date +%s)" -lt "$END" ]; do
  for _ in $(seq 1 "$RATE"); do
    i=$((i + 1))
    curl -fs -o /dev/null -X POST http://127.0.0.1:$GW_PORT/v1/snapshot-jobs \
      -H 'content-type: application/json' \
      -d "{\"input\":{\"location\":\"oss-cn-shanghai\",\"bucket\":\"media\",\"object\":\"in/$i.mp4\"},\"output\":{\"location\":\"oss-cn-shanghai\",\"bucket\":\"media\",\"object\":\"out/$i/{Count}.jpg\"},\"time_ms\":1000,\"pipeline_id\":\"9bad3801a2c561c22c4df9c6abcd0000\"}" \
      || echo "submit $i failed"
  done
  sleep 1
done
sleep 10
echo "submitted: $i"
echo "--- emulator calls by action and code"
curl -fs http://127.0.0.1:$EMU_PORT/_emulator/stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d.get("calls", d), indent=1))'
echo "--- emulator MNS"
curl -fs http://127.0.0.1:$EMU_PORT/_emulator/mns | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["stats"]))'
echo "--- emulator STS"
curl -fs http://127.0.0.1:$EMU_PORT/_emulator/sts | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("oidc_tokens"); print(json.dumps(d))'
echo "--- snapgate"
curl -fs http://127.0.0.1:$GW_PORT/metrics | grep -E '^snapgate_(credential|jobs|mns_calls|mps_calls_total)'
curl -fs http://127.0.0.1:$GW_PORT/readyz; echo
grep -c "credential refresh failed" "$OUT/gateway.log" || true
echo "logs: $OUT"
