#!/usr/bin/env bash
# Runs on the EC2 host (in an SSM session, or sent by `deploy/deploy.sh --refresh` through SSM Run
# Command, as root): refresh the model without a restart. Each version lives in its own folder under
# MODELS (RELEASE_DIR/models/versions/NAME, a folder `python -m export.pull` wrote); the symlinks
# `current` and `shadow` there are what the api reads as MODEL_DIR and SHADOW_MODEL_DIR (compose.refresh.yaml
# mounts MODELS read-only at /srv/models), and each change goes through the service's admin API, which
# checks sha256 and the golden self-test before it swaps.
#
#   refresh.sh init FOLDER        once per host: FOLDER is the first version (current and shadow); the
#                                 api restarts once, now reading MODELS (release.sh keeps it that way)
#   refresh.sh shadow FOLDER|NAME place a version and load it as the candidate (the primary is untouched)
#   refresh.sh status             the candidate's comparison so far (GET /v1/shadow)
#   refresh.sh promote            the candidate answers from now on; the old primary becomes `previous`
#   refresh.sh rollback           `previous` answers again (current and previous swap)
#   refresh.sh unshadow           stop comparing (until the next restart, which loads `shadow` again)
#
# Every change is verified: /v1/model must then report the sha256 that the version's card lists for the
# variant served; when it does not, the links go back and the old model is reloaded.
# Exit: 0 done; 1 refused or failed, the model that served before still serves; 2 a failed change could
# not be undone (see /v1/model); 3 bad usage.
# State in MODELS: versions/NAME/, current, shadow, previous (symlinks), refresh.log. The admin key is
# ADMIN_API_KEY in RELEASE_DIR/settings.env (mode 600; API_KEY there is sent too when set).
# Env: RELEASE_DIR (/opt/chest-cancer-net), API_PORT (8000), READY_TIMEOUT_S (120), POLL_S (2).
set -euo pipefail

usage() { echo "usage: refresh.sh init FOLDER | shadow FOLDER|NAME | status | promote | rollback | unshadow" >&2; exit 3; }
action=${1:-}
arg=${2:-}
dir=${RELEASE_DIR:-/opt/chest-cancer-net}
models=$dir/models
port=${API_PORT:-8000}
url=http://127.0.0.1:${port##*:} # API_PORT may be 127.0.0.1:8000 (tls profile)
timeout_s=${READY_TIMEOUT_S:-120}
poll_s=${POLL_S:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { printf 'refresh: %s\n' "$*"; }
fail() { log "$*" >&2; exit 1; }
record() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$models/refresh.log"; }
setting() { sed -n "s/^$1=//p" "$dir/settings.env" 2>/dev/null | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"; }
# The version folder a link names ("" when there is no link).
target() { if [ -L "$models/$1" ]; then basename "$(readlink "$models/$1")"; fi; }
# Repoint a link atomically: the service reads it at reload time, never half-changed.
point() { ln -sfn "versions/$2" "$models/.$1.next" && mv -T "$models/.$1.next" "$models/$1"; }
# One value from a JSON file: field FILE KEY [KEY...] ("" when absent or null).
field() {
  python3 - "$@" <<'EOF'
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2:]:
    value = value.get(key) if isinstance(value, dict) else None
print("" if value is None else value)
EOF
}

# Call the service: api METHOD PATH; the body lands in $work/body, the HTTP status is printed (000: no answer).
api() {
  local code
  code=$(curl --silent --show-error --max-time 60 --request "$1" --header "@$work/headers" \
    --output "$work/body" --write-out '%{http_code}' "$url$2" 2>"$work/curl.err") || true
  printf '%s\n' "${code:-000}"
}
headers() {
  local key api_key
  key=$(setting ADMIN_API_KEY)
  [ -n "$key" ] || fail "ADMIN_API_KEY is not set in $dir/settings.env: the admin API is off without it"
  api_key=$(setting API_KEY)
  (umask 077; { printf 'X-Admin-Key: %s\n' "$key"; [ -z "$api_key" ] || printf 'X-API-Key: %s\n' "$api_key"; } >"$work/headers")
}
# The sha256 a version's card lists for VARIANT.
card_sha() { field "$models/versions/$1/model.json" files "$2" sha256; }
# Does the primary now serve version NAME? Prints what it serves when not.
serves() {
  local code variant sha expected
  code=$(api GET /v1/model)
  [ "$code" = 200 ] || { explain "GET /v1/model" "$code"; return 1; }
  variant=$(field "$work/body" variant)
  sha=$(field "$work/body" sha256)
  expected=$(card_sha "$1" "$variant")
  [ -n "$expected" ] && [ "$sha" = "$expected" ] && return 0
  log "the primary serves sha256 ${sha:0:12} ($variant), not $1's ${expected:0:12}" >&2
  return 1
}
# Why a call failed: the service's JSON error, or curl's own message when nothing answered.
explain() {
  local why
  why=$(cat "$work/body" "$work/curl.err" 2>/dev/null || true)
  log "$1 answered ${2/#000/nothing}: ${why:-no body}" >&2
}

# Put FOLDER under versions/ (copied, then renamed into place) or accept NAME already there; prints the name.
place() {
  local src=$1 name
  name=$(basename "$src")
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || fail "'$name' is not a version name (letters, digits, . _ -)"
  if [[ $src != */* ]] && [ -d "$models/versions/$name" ]; then
    printf '%s\n' "$name"
    return
  fi
  [ -f "$src/model.json" ] || fail "$src has no model.json: pull a version with \`python -m export.pull --out $src\`"
  mkdir -p "$models/versions"
  chmod 755 "$models" "$models/versions"
  if [ -e "$models/versions/$name" ]; then
    diff -r -q "$src" "$models/versions/$name" >/dev/null ||
      fail "versions/$name exists and differs from $src: give the new folder another name"
  else
    rm -rf "$models/versions/.$name.next"
    cp -R "$src" "$models/versions/.$name.next"
    chmod -R a+rX,go-w "$models/versions/.$name.next" # the container's user (10001) reads them
    mv -T "$models/versions/.$name.next" "$models/versions/$name"
  fi
  printf '%s\n' "$name"
}

compose_up() {
  local compose=(docker compose --project-directory "$dir" --file "$dir/compose.yaml")
  # The same files as release.sh: the awslogs override when asked, the refresh one once `current` exists.
  if grep -qx 'CLOUDWATCH_LOGS=on' "$dir/settings.env" 2>/dev/null; then compose+=(--file "$dir/compose.awslogs.yaml"); fi
  if [ -L "$models/current" ]; then compose+=(--file "$dir/compose.refresh.yaml"); fi
  "${compose[@]}" up --detach --no-build api
}
# Wait until the primary serves NAME (after a restart).
wait_for() {
  local deadline=$((SECONDS + timeout_s))
  while [ "$SECONDS" -lt "$deadline" ]; do
    serves "$1" >/dev/null && return 0
    sleep "$poll_s"
  done
  serves "$1"
}

init() {
  [ -n "$arg" ] || usage
  [ ! -L "$models/current" ] || fail "already set up (current is $(target current)): use shadow and promote"
  [ -f "$dir/compose.refresh.yaml" ] || fail "$dir/compose.refresh.yaml is missing: deploy a release that ships it first"
  headers
  local name
  name=$(place "$arg")
  point current "$name"
  point shadow "$name"
  log "restarting the api on $name (once: from now on it reads $models)"
  if compose_up && wait_for "$name"; then
    api DELETE /admin/models/shadow >/dev/null # `shadow` is the primary itself: nothing to compare yet
    record "init $name"
    log "$name serves from $models"
    return 0
  fi
  log "$name did not come up; back to the image's own model"
  rm -f "$models/current" "$models/shadow"
  compose_up || true
  record "init-failed $name"
  exit 1
}

shadow() {
  [ -n "$arg" ] || usage
  [ -L "$models/current" ] || fail "not set up yet: run \`refresh.sh init FOLDER\` first"
  headers
  local name old code
  name=$(place "$arg")
  old=$(target shadow)
  point shadow "$name"
  code=$(api POST '/admin/models/reload?target=shadow')
  if [ "$code" != 200 ]; then
    explain "reload of the candidate $name" "$code"
    point shadow "${old:-$(target current)}"
    record "shadow-refused $name"
    fail "$name is not the candidate; the primary ($(target current)) is untouched"
  fi
  record "shadow $name (primary: $(target current))"
  log "$name is the candidate, compared with $(target current); watch \`refresh.sh status\`"
}

status() {
  headers
  local code previous
  code=$(api GET /v1/shadow)
  [ "$code" = 200 ] || { explain "GET /v1/shadow" "$code"; exit 1; }
  previous=$(target previous)
  log "current: $(target current), shadow: $(target shadow), previous: ${previous:-none}"
  python3 - "$work/body" <<'EOF'
import json, sys

s = json.load(open(sys.argv[1]))
if not s.get("active"):
    print("no candidate is being compared")
c = s.get("candidate") or {}
if c:
    print(f"candidate: {c.get('name')} {c.get('version')} ({c.get('variant')}, sha256 {str(c.get('sha256'))[:12]})")
print(f"since {s.get('since')}: compared {s.get('compared')}, agree {s.get('agree')}, disagree {s.get('disagree')}, "
      f"dropped {s.get('dropped')}, errors {s.get('errors')}")
if s.get("agreement") is not None:
    low, high = s.get("agreement_interval") or (None, None)
    print(f"agreement {s['agreement']:.3f}" + (f" (95% {low:.3f}-{high:.3f})" if low is not None else ""))
for primary, row in sorted((s.get("labels") or {}).items()):
    print(f"  primary {primary}: " + ", ".join(f"candidate {k} {v}" for k, v in sorted(row.items())))
diff = s.get("probability_difference") or {}
if diff:
    print("probability difference: " + ", ".join(f"{k} {v:.3f}" for k, v in diff.items() if v is not None))
EOF
}

# After a failed change: NAME is current again and reloaded; exit 1 when it serves, 2 when it does not.
undo() {
  point current "$1"
  local code
  code=$(api POST /admin/models/reload)
  if [ "$code" = 200 ] && serves "$1"; then
    fail "$1 serves again"
  fi
  [ "$code" = 200 ] || explain "the reload of $1" "$code"
  record "undo-failed $1"
  log "could not go back to $1: check GET /v1/model and $models"
  exit 2
}

promote() {
  headers
  local new old code
  new=$(target shadow)
  old=$(target current)
  [ -n "$old" ] || fail "not set up yet: run \`refresh.sh init FOLDER\` first"
  [ "$new" != "$old" ] || fail "no candidate: shadow is the current version ($old)"
  point current "$new"
  code=$(api POST /admin/models/promote)
  if [ "$code" != 200 ]; then
    explain "promote" "$code"
    record "promote-failed $new (primary: $old)"
    point current "$old"
    fail "$new is not promoted; $old still serves"
  fi
  if ! serves "$new"; then
    record "promote-failed $new (primary: $old)"
    undo "$old"
  fi
  point previous "$old"
  record "promote $new (previous: $old)"
  prune
  log "$new serves; $old is previous (\`refresh.sh rollback\` to go back)"
}

rollback() {
  headers
  local back now code
  back=$(target previous)
  now=$(target current)
  [ -n "$back" ] || fail "no previous version recorded in $models"
  point current "$back"
  code=$(api POST /admin/models/reload)
  if [ "$code" != 200 ]; then # refused: the model that served keeps serving
    explain "the reload of $back" "$code"
    point current "$now"
    record "rollback-failed $back (primary: $now)"
    fail "$back is not back; $now still serves"
  fi
  if ! serves "$back"; then
    record "rollback-failed $back (primary: $now)"
    undo "$now"
  fi
  point previous "$now"
  record "rollback $back (previous: $now)"
  log "$back serves again; $now is previous"
}

unshadow() {
  headers
  local code
  code=$(api DELETE /admin/models/shadow)
  [[ $code == 20? ]] || { explain "DELETE /admin/models/shadow" "$code"; exit 1; }
  record "unshadow $(target shadow)"
  log "no candidate is compared now (a restart loads $(target shadow) again)"
}

# Keep the versions a link names (current, previous, shadow); drop the others.
prune() {
  local keep folder
  keep=" $(target current) $(target previous) $(target shadow) "
  for folder in "$models"/versions/*/; do
    [ -d "$folder" ] || continue
    folder=$(basename "$folder")
    [[ $keep == *" $folder "* ]] || rm -rf "${models:?}/versions/$folder"
  done
}

case $action in
  init | shadow | status | promote | rollback | unshadow) "$action" ;;
  *) usage ;;
esac
