#!/usr/bin/env bash
# Runs on the EC2 host (sent by deploy/deploy.sh through SSM Run Command, as root): switch the `api`
# service of compose.yaml to REPOSITORY:SHA, wait for /health/ready, and roll back to the SHA that ran
# before when the new one does not come up.
#
#   release.sh REPOSITORY SHA     deploy (REPOSITORY: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/chest-cancer-net)
#   release.sh REPOSITORY --rollback    go back to the previous release by hand
#
# Exit: 0 deployed; 1 not deployed, the previous release (if any) runs again; 2 the rollback failed too.
# State in RELEASE_DIR (/opt/chest-cancer-net): compose.yaml, .env (written here: settings.env, then
# API_IMAGE=...), current, previous, releases.log. The service's own settings (API_KEY, CORS_ORIGINS, ...)
# go in settings.env there (mode 600); CLOUDWATCH_LOGS=on there adds compose.awslogs.yaml, and a
# models/current link (deploy/refresh.sh init) adds compose.refresh.yaml: the models come from the host.
# Env: READY_TIMEOUT_S (120), POLL_S (2), API_PORT (8000).
set -euo pipefail

repository=${1:?usage: release.sh REPOSITORY SHA|--rollback}
wanted=${2:?usage: release.sh REPOSITORY SHA|--rollback}
dir=${RELEASE_DIR:-/opt/chest-cancer-net}
timeout_s=${READY_TIMEOUT_S:-120}
poll_s=${POLL_S:-2}
ready_url=http://127.0.0.1:${API_PORT:-8000}/health/ready
compose=(docker compose --project-directory "$dir" --file "$dir/compose.yaml")
# CloudWatch Logs (ec2/bootstrap.sh with CLOUDWATCH=on): the awslogs driver replaces json-file.
if grep -qx 'CLOUDWATCH_LOGS=on' "$dir/settings.env" 2>/dev/null; then
  compose+=(--file "$dir/compose.awslogs.yaml")
fi
# The model refresh path (refresh.sh): the host's models folder instead of the image's model.
if [ -L "$dir/models/current" ]; then
  compose+=(--file "$dir/compose.refresh.yaml")
fi

log() { printf 'release: %s\n' "$*"; }
record() { printf '%s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" >>"$dir/releases.log"; }

# Start SHA and wait until it answers ready; returns non-zero when it does not within the timeout.
start() {
  local sha=$1 image=$repository:$1 deadline running
  { cat "$dir/settings.env" 2>/dev/null || true; printf 'API_IMAGE=%s\n' "$image"; } >"$dir/.env.next"
  chmod 600 "$dir/.env.next"
  mv "$dir/.env.next" "$dir/.env"
  "${compose[@]}" up --detach --no-build --remove-orphans api || return 1
  deadline=$((SECONDS + timeout_s))
  while [ "$SECONDS" -lt "$deadline" ]; do
    running=$(docker inspect --format '{{.Config.Image}}' "$("${compose[@]}" ps --quiet api)" 2>/dev/null || true)
    if [ "$running" = "$image" ] && curl --fail --silent --show-error --max-time 3 --output /dev/null "$ready_url" 2>/dev/null; then
      log "$sha is ready"
      return 0
    fi
    sleep "$poll_s"
  done
  log "$sha did not answer ready within $timeout_s s; its last log lines:"
  "${compose[@]}" logs --no-color --tail 30 api || true
  return 1
}

mkdir -p "$dir"
current=$(cat "$dir/current" 2>/dev/null || true)
previous=$(cat "$dir/previous" 2>/dev/null || true)

if [ "$wanted" = --rollback ]; then
  [ -n "$previous" ] || { log "no previous release to roll back to"; exit 1; }
  wanted=$previous
fi

if [ "$wanted" = "$current" ] && curl --fail --silent --max-time 3 --output /dev/null "$ready_url" 2>/dev/null; then
  log "$wanted already runs and is ready"
  exit 0
fi

log "pulling $repository:$wanted"
if ! docker pull --quiet "$repository:$wanted"; then
  log "cannot pull $repository:$wanted; nothing changed"
  record "$wanted" pull-failed
  exit 1
fi

log "starting $wanted (running now: ${current:-nothing})"
if start "$wanted"; then
  printf '%s\n' "$wanted" >"$dir/current"
  if [ -n "$current" ] && [ "$current" != "$wanted" ]; then printf '%s\n' "$current" >"$dir/previous"; fi
  record "$wanted" deployed
  # Keep the images of this release and the one before (for a rollback); drop older ones.
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$repository" |
    grep -v -x -e "$repository:$wanted" -e "$repository:${current:-none}" |
    xargs -r docker image rm >/dev/null 2>&1 || true
  log "deployed $wanted"
  exit 0
fi

record "$wanted" failed
if [ -z "$current" ]; then
  log "no previous release to roll back to"
  exit 1
fi
log "rolling back to $current"
if start "$current"; then
  record "$current" rolled-back
  log "rolled back to $current; $wanted is not deployed"
  exit 1
fi
record "$current" rollback-failed
log "the rollback to $current failed as well"
exit 2
