#!/usr/bin/env bash
# Runs in CI with short-lived AWS credentials (GitHub OIDC): deploy commit SHA to the EC2 host through
# SSM Run Command (no SSH, no open port 22). The host receives this commit's compose.yaml, its
# CloudWatch Logs override and release.sh, and runs `release.sh REPOSITORY SHA`, which waits for
# /health/ready and rolls back to the previous SHA when the new one does not come up.
#
#   deploy/deploy.sh SHA
#
# Env: INSTANCE_ID (i-...), REPOSITORY (<account>.dkr.ecr.<region>.amazonaws.com/chest-cancer-net),
#      AWS_REGION; optional REMOTE_DIR (/opt/chest-cancer-net), DEPLOY_TIMEOUT_S (600), POLL_S (5).
# Exit: release.sh's code on the host (0 deployed, 1 not deployed and rolled back, 2 rollback failed),
# 3 when SSM could not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

sha=${1:?usage: deploy/deploy.sh SHA}
instance=${INSTANCE_ID:?set INSTANCE_ID}
repository=${REPOSITORY:?set REPOSITORY}
remote_dir=${REMOTE_DIR:-/opt/chest-cancer-net}
timeout_s=${DEPLOY_TIMEOUT_S:-600}
poll_s=${POLL_S:-5}
[[ $sha =~ ^[0-9a-f]{7,40}$ ]] || { echo "deploy: '$sha' is not a commit SHA" >&2; exit 3; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The host gets both files inline (base64), so what runs there is exactly this commit's.
REMOTE_DIR=$remote_dir REPOSITORY=$repository SHA=$sha TIMEOUT_S=$timeout_s \
  python3 - "$work/parameters.json" <<'EOF'
import base64, json, os, sys
from shlex import quote

folder = os.environ["REMOTE_DIR"]


def unpack(path, name):
    data = base64.b64encode(open(path, "rb").read()).decode()
    return f"echo {data} | base64 -d > {quote(folder + '/' + name)}"


commands = [
    "set -eu",
    f"mkdir -p {quote(folder)}",
    unpack("compose.yaml", "compose.yaml"),
    unpack("deploy/release.sh", "release.sh"),
    unpack("deploy/cloudwatch/compose.awslogs.yaml", "compose.awslogs.yaml"),
    f"RELEASE_DIR={quote(folder)} bash {quote(folder + '/release.sh')} "
    f"{quote(os.environ['REPOSITORY'])} {quote(os.environ['SHA'])}",
]
json.dump({"commands": commands, "executionTimeout": [os.environ["TIMEOUT_S"]]}, open(sys.argv[1], "w"))
EOF

command_id=$(aws ssm send-command \
  --instance-ids "$instance" \
  --document-name AWS-RunShellScript \
  --comment "chest-cancer-net deploy ${sha:0:12}" \
  --parameters "file://$work/parameters.json" \
  --query Command.CommandId --output text)
echo "deploy: SSM command $command_id on $instance: release ${sha:0:12}"

field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$work/invocation.json" "$1"; }
deadline=$((SECONDS + timeout_s + 60))
status=Unknown
while [ "$SECONDS" -lt "$deadline" ]; do
  sleep "$poll_s"
  # Right after send-command the invocation may not exist yet: try again.
  aws ssm get-command-invocation --command-id "$command_id" --instance-id "$instance" \
    --output json >"$work/invocation.json" 2>/dev/null || continue
  status=$(field Status)
  case $status in Pending | InProgress | Delayed) continue ;; esac
  break
done

if [ -s "$work/invocation.json" ]; then
  field StandardOutputContent
  field StandardErrorContent >&2
fi
case $status in
  Success)
    echo "deploy: ${sha:0:12} is live"
    exit 0 ;;
  Failed)
    code=$(field ResponseCode)
    echo "deploy: ${sha:0:12} was not deployed (release.sh exit $code)"
    [ "$code" = 2 ] && exit 2
    exit 1 ;;
  *)
    echo "deploy: the SSM command ended as '$status'"
    exit 3 ;;
esac
