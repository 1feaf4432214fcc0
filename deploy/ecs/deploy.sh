#!/usr/bin/env bash
# Runs in CI with short-lived AWS credentials (GitHub OIDC): deploy commit SHA to the ECS service. The
# task definition of this commit (task-definition.json with its placeholders filled) is registered and
# the service moved to it; ECS replaces the tasks behind the ALB (minimum healthy 100%: new tasks must
# pass the target group's /health/ready check before old ones drain), and its deployment circuit
# breaker rolls back to the previous task definition when the new tasks do not become healthy.
#
#   deploy/ecs/deploy.sh SHA
#
# Env: AWS_REGION, AWS_ACCOUNT_ID, ECS_CLUSTER, VPC_CIDR (whose addresses the service trusts for
#      X-Forwarded-For: the ALB's); optional ECS_SERVICE (chest-cancer-net).
# Exit: 0 deployed; 1 the deployment failed (rolled back by ECS); 3 bad arguments.
set -euo pipefail
cd "$(dirname "$0")"

sha=${1:?usage: deploy/ecs/deploy.sh SHA}
[[ $sha =~ ^[0-9a-f]{7,40}$ ]] || { echo "ecs deploy: '$sha' is not a commit SHA" >&2; exit 3; }
: "${AWS_REGION:?set AWS_REGION}" "${AWS_ACCOUNT_ID:?set AWS_ACCOUNT_ID}" "${ECS_CLUSTER:?set ECS_CLUSTER}"
: "${VPC_CIDR:?set VPC_CIDR}"
service=${ECS_SERVICE:-chest-cancer-net}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Fill the placeholders (the service would refuse a FORWARDED_ALLOW_IPS that is not a network).
SHA=$sha python3 - task-definition.json "$work/task.json" <<'PY'
import ipaddress, json, os, sys

ipaddress.ip_network(os.environ["VPC_CIDR"], strict=False)
text = open(sys.argv[1]).read()
for name, value in (("ACCOUNT_ID", "AWS_ACCOUNT_ID"), ("REGION", "AWS_REGION"), ("COMMIT_SHA", "SHA"), ("VPC_CIDR", "VPC_CIDR")):
    text = text.replace(name, os.environ[value])
json.dump(json.loads(text), open(sys.argv[2], "w"))
PY

arn=$(aws ecs register-task-definition --cli-input-json "file://$work/task.json" \
  --query taskDefinition.taskDefinitionArn --output text)
echo "ecs deploy: registered $arn"
aws ecs update-service --cluster "$ECS_CLUSTER" --service "$service" --task-definition "$arn" \
  --query service.serviceName --output text >/dev/null
echo "ecs deploy: $service is moving to ${sha:0:12}; waiting until it is stable"
# services-stable: polls every 15 s, 40 times. A failed deployment also ends stable, on the old tasks.
if ! aws ecs wait services-stable --cluster "$ECS_CLUSTER" --services "$service"; then
  echo "ecs deploy: $service did not become stable" >&2
fi
# shellcheck disable=SC2016 # backquotes are JMESPath literals
read -r primary rollout < <(aws ecs describe-services --cluster "$ECS_CLUSTER" --services "$service" \
  --query 'services[0].deployments[?status==`PRIMARY`] | [0].[taskDefinition, rolloutState]' --output text)
if [ "$primary" = "$arn" ] && [ "$rollout" = COMPLETED ]; then
  echo "ecs deploy: ${sha:0:12} is live"
  exit 0
fi
echo "ecs deploy: ${sha:0:12} was not deployed (primary $primary, rollout ${rollout:-unknown}); ECS rolled back"
exit 1
