#!/usr/bin/env bash
# Runs in CI with short-lived AWS credentials (GitHub OIDC): deploy commit SHA to the EC2 host through
# SSM Run Command (no SSH, no open port 22). The host receives this commit's compose.yaml, its
# CloudWatch Logs and model refresh overrides, release.sh and refresh.sh, and runs `release.sh
# REPOSITORY SHA`, which waits for /health/ready and rolls back to the previous SHA when the new one
# does not come up. With --refresh it runs this commit's `refresh.sh ACTION [FOLDER]` there instead:
# the model refresh path, no new image and no restart.
#
#   deploy/deploy.sh SHA
#   deploy/deploy.sh --refresh status|promote|rollback|unshadow
#   deploy/deploy.sh --refresh shadow|init FOLDER   a folder under models/versions/, or a path on the host
#
# Env: INSTANCE_ID (i-...), AWS_REGION, REPOSITORY (<account>.dkr.ecr.<region>.amazonaws.com/chest-cancer-net;
#      not for --refresh); optional REMOTE_DIR (/opt/chest-cancer-net), DEPLOY_TIMEOUT_S (600), POLL_S (5).
# Exit: release.sh's code on the host (0 deployed, 1 not deployed and rolled back, 2 rollback failed),
# or refresh.sh's (0 done, 1 refused or failed with the old model serving, 2 could not undo); 3 when
# SSM could not run it or the arguments are wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

bad() { echo "deploy: $*" >&2; exit 3; }
mode=release sha='' repository='' action='' folder=''
if [ "${1:-}" = --refresh ]; then
  mode=refresh action=${2:-} folder=${3:-}
  case $action in
    status | promote | rollback | unshadow) [ -z "$folder" ] || bad "refresh $action takes no folder" ;;
    shadow | init)
      [[ $folder =~ ^[A-Za-z0-9/][A-Za-z0-9._/-]*$ && $folder != *..* ]] ||
        bad "refresh $action needs a version folder, not '$folder'" ;;
    *) bad "'$action' is not a refresh action (status, shadow, promote, rollback, unshadow, init)" ;;
  esac
  what="refresh $action${folder:+ $folder}"
else
  sha=${1:?usage: deploy/deploy.sh SHA | --refresh ACTION [FOLDER]}
  [[ $sha =~ ^[0-9a-f]{7,40}$ ]] || bad "'$sha' is not a commit SHA"
  repository=${REPOSITORY:?set REPOSITORY}
  what="release ${sha:0:12}"
fi
instance=${INSTANCE_ID:?set INSTANCE_ID}
remote_dir=${REMOTE_DIR:-/opt/chest-cancer-net}
timeout_s=${DEPLOY_TIMEOUT_S:-600}
poll_s=${POLL_S:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The host gets the files inline (base64), so what runs there is exactly this commit's.
MODE=$mode REMOTE_DIR=$remote_dir REPOSITORY=$repository SHA=$sha ACTION=$action FOLDER=$folder \
  TIMEOUT_S=$timeout_s python3 - "$work/parameters.json" <<'EOF'
import base64, json, os, sys
from shlex import quote

folder = os.environ["REMOTE_DIR"]


def unpack(path, name):
    data = base64.b64encode(open(path, "rb").read()).decode()
    return f"echo {data} | base64 -d > {quote(folder + '/' + name)}"


commands = ["set -eu", f"mkdir -p {quote(folder)}"]
if os.environ["MODE"] == "release":
    commands += [
        unpack("compose.yaml", "compose.yaml"),
        unpack("deploy/release.sh", "release.sh"),
        unpack("deploy/cloudwatch/compose.awslogs.yaml", "compose.awslogs.yaml"),
        unpack("deploy/compose.refresh.yaml", "compose.refresh.yaml"),
        unpack("deploy/refresh.sh", "refresh.sh"),
        f"RELEASE_DIR={quote(folder)} bash {quote(folder + '/release.sh')} "
        f"{quote(os.environ['REPOSITORY'])} {quote(os.environ['SHA'])}",
    ]
else:  # the compose files stay those of the release that runs; the tool is this commit's
    args = " ".join(quote(a) for a in (os.environ["ACTION"], os.environ["FOLDER"]) if a)
    commands += [
        unpack("deploy/refresh.sh", "refresh.sh"),
        f"RELEASE_DIR={quote(folder)} bash {quote(folder + '/refresh.sh')} {args}",
    ]
json.dump({"commands": commands, "executionTimeout": [os.environ["TIMEOUT_S"]]}, open(sys.argv[1], "w"))
EOF

command_id=$(aws ssm send-command \
  --instance-ids "$instance" \
  --document-name AWS-RunShellScript \
  --comment "chest-cancer-net $what" \
  --parameters "file://$work/parameters.json" \
  --query Command.CommandId --output text)
echo "deploy: SSM command $command_id on $instance: $what"

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
code=$(field ResponseCode 2>/dev/null || true)
case $mode:$status in
  release:Success)
    echo "deploy: ${sha:0:12} is live"
    exit 0 ;;
  release:Failed)
    echo "deploy: ${sha:0:12} was not deployed (release.sh exit $code)"
    [ "$code" = 2 ] && exit 2
    exit 1 ;;
  refresh:Success)
    echo "deploy: $what done"
    exit 0 ;;
  refresh:Failed)
    echo "deploy: $what failed (refresh.sh exit $code)"
    [[ $code =~ ^[12]$ ]] && exit "$code"
    exit 3 ;;
  *)
    echo "deploy: the SSM command ended as '$status'"
    exit 3 ;;
esac
