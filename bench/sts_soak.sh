#!/usr/bin/env bash
# Soak with temporary credentials: the emulator's STS (or its ECS metadata server) issues
# 60-second tokens, snapgate refreshes them in the background with 20 s left, and jobs are
# submitted steadily for DURATION_S seconds. Prints the emulator's call counts by code (MPS and
# MNS: any InvalidSecurityToken.* / SecurityTokenExpired is a failed call), the jobs' final
# states and snapgate's credential metrics. Needs the debug binary (cargo build) and Postgres.
# Usage: bench/sts_soak.sh [DURATION_S=600] [RATE_PER_S=2] [MODE=ram_role_arn]
# MODE, where snapgate's credentials come from:
#   ram_role_arn  AssumeRole from the narrow key testid (ALIBABA_CLOUD_ROLE_ARN + the key);
#   ecs_ram_role  the emulator's IMDSv2 (ALIBABA_CLOUD_ECS_METADATA names the role, IMDSv1 off);
#   oidc          AssumeRoleWithOIDC (RRSA) with a token file, rewritten every 60 s (each refresh
#                 reads it again).
# In the last two snapgate is given no access key at all, so a bypass of the chain would fail.
# Each mode has its own ports and database: modes can run at once. SOAK_BIN overrides the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION_S=${1:-600}
RATE=${2:-2}
MODE=${3:-ram_role_arn}
BIN=${SOAK_BIN:-target/debug/snapgate}
ROLE=acs:ram::1234567890123456:role/snapgate
OUT=$(mktemp -d)
case "$MODE" in
  ram_role_arn) EMU_PORT=19481 DB=snapgate_sts_soak ;;
  ecs_ram_role) EMU_PORT=19483 DB=snapgate_sts_soak_ecs ;;
  oidc) EMU_PORT=19485 DB=snapgate_sts_soak_oidc ;;
  *) echo "MODE must be ram_role_arn, ecs_ram_role or oidc, not $MODE" >&2; exit 2 ;;
esac
GW_PORT=$((EMU_PORT + 1))
EMU=http://127.0.0.1:$EMU_PORT
case "$MODE" in
  ram_role_arn) CREDS=(ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret
    ALIBABA_CLOUD_ROLE_ARN=$ROLE ALIBABA_CLOUD_STS_ENDPOINT=$EMU) ;;
  ecs_ram_role) CREDS=(ALIBABA_CLOUD_ECS_METADATA=snapgate-emulator-role
    ALIBABA_CLOUD_IMDSV1_DISABLED=true SNAPGATE__CREDENTIALS__IMDS_ENDPOINT=$EMU) ;;
  oidc) echo "eyJ-soak-token-0" >"$OUT/oidc-token"
    CREDS=(ALIBABA_CLOUD_ROLE_ARN=$ROLE
    ALIBABA_CLOUD_OIDC_PROVIDER_ARN=acs:ram::1234567890123456:oidc-provider/ack-rrsa-soak
    ALIBABA_CLOUD_OIDC_TOKEN_FILE=$OUT/oidc-token ALIBABA_CLOUD_STS_ENDPOINT=$EMU) ;;
esac
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
"$BIN" emulator --listen 127.0.0.1:$EMU_PORT --access-key testid:testsecret --sts-ttl-s 60 \
  --mns-queue soak --start-ms 100 --process-ms 500 >"$OUT/emulator.log" 2>&1 &
EMU_PID=$!
env -i PATH="$PATH" SNAPGATE_CONFIG_DIR=config \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
  SNAPGATE__HTTP__LISTEN=127.0.0.1:$GW_PORT SNAPGATE__AUTH__ENABLED=false \
  SNAPGATE__DATABASE__MIGRATE_ON_START=true \
  SNAPGATE__MPS__ENDPOINT=$EMU \
  SNAPGATE__MPS__MNS__ENDPOINT=$EMU SNAPGATE__MPS__MNS__QUEUE=soak \
  "${CREDS[@]}" RUST_LOG=info \
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
  # RRSA rotates the projected token file; snapgate must read the new one at its next refresh.
  if [ "$MODE" = oidc ]; then
    echo "eyJ-soak-token-$(( ($(date +%s) - END + DURATION_S) / 60 ))" >"$OUT/oidc-token.new"
    mv "$OUT/oidc-token.new" "$OUT/oidc-token"
  fi
done
sleep 10
echo "mode: $MODE"
echo "submitted: $i"
echo "--- emulator calls by action and code"
curl -fs http://127.0.0.1:$EMU_PORT/_emulator/stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d.get("calls", d), indent=1))'
echo "--- emulator MNS"
curl -fs http://127.0.0.1:$EMU_PORT/_emulator/mns | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["stats"]))'
echo "--- emulator STS"
curl -fs http://127.0.0.1:$EMU_PORT/_emulator/sts | python3 -c 'import json,sys; d=json.load(sys.stdin); t=d.pop("oidc_tokens"); d["oidc_tokens_distinct"]=len(set(t)); print(json.dumps(d))'
echo "--- snapgate"
curl -fs http://127.0.0.1:$GW_PORT/metrics | grep -E '^snapgate_(credential|jobs|mns_calls|mps_calls_total)'
curl -fs http://127.0.0.1:$GW_PORT/readyz; echo
echo "--- jobs by state (store)"
psql -h 127.0.0.1 -U postgres -d "$DB" -Atc "SELECT state, count(*) FROM jobs GROUP BY state" || true
echo "--- gateway log: refresh failures, then WARN/ERROR lines"
grep -c "credential refresh failed" "$OUT/gateway.log" || true
grep -E " (WARN|ERROR) " "$OUT/gateway.log" | tail -n 20 || true
echo "logs: $OUT"
