#!/usr/bin/env bash
# Runs a release on a target host over SSH, from any CI system (GitHub Actions, GitLab CI,
# Jenkins): copies this checkout's deploy/ tree to the host, pulls the image there and runs
# deploy/release/release.sh, which switches nginx between colours, checks /readyz and rolls
# back by itself (exiting non-zero) when the new colour does not come up.
#
#   release-remote.sh deploy blue-green|rolling IMAGE   copy deploy/, pull IMAGE, release it
#   release-remote.sh current                            print the last image recorded as good
#   release-remote.sh record IMAGE                       record IMAGE as good (after the smoke test)
#   release-remote.sh rollback IMAGE                     release IMAGE (the last good one) blue-green
#   release-remote.sh ship blue-green|rolling IMAGE URL  all of it: deploy, smoke test URL,
#                                                        record, or roll back to the last good
#                                                        image when the smoke test fails
#
# Environment (the CI system fills these from its secret store, never from literals):
#   DEPLOY_HOST, DEPLOY_USER     where to log in
#   DEPLOY_SSH_KEY_FILE          private key file (mode 0600)
#   DEPLOY_KNOWN_HOSTS_FILE      the host's public key(s): host keys are checked, never skipped
#   DEPLOY_DIR                   the release area on the host (default /opt/cmschat)
#   REGISTRY, REGISTRY_USER, REGISTRY_PASSWORD
#                                optional: a pull credential, used for the pull and logged
#                                out again (without it the host must be able to pull already)
# The single-quoted scripts below run on the host, with their values as arguments ($1...).
# shellcheck disable=SC2016
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${DEPLOY_HOST:?DEPLOY_HOST is not set}"
: "${DEPLOY_USER:?DEPLOY_USER is not set}"
: "${DEPLOY_SSH_KEY_FILE:?DEPLOY_SSH_KEY_FILE is not set}"
: "${DEPLOY_KNOWN_HOSTS_FILE:?DEPLOY_KNOWN_HOSTS_FILE is not set}"
deploy_dir="${DEPLOY_DIR:-/opt/cmschat}"
for file in "$DEPLOY_SSH_KEY_FILE" "$DEPLOY_KNOWN_HOSTS_FILE"; do
  [ -s "$file" ] || { echo "release-remote: $file is missing or empty" >&2; exit 2; }
done

remote() {  # runs its arguments, each quoted, as one command on the host
  local command
  printf -v command '%q ' "$@"
  ssh -i "$DEPLOY_SSH_KEY_FILE" \
    -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=20 \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$DEPLOY_KNOWN_HOSTS_FILE" \
    "$DEPLOY_USER@$DEPLOY_HOST" "$command"
}

release_dir() {  # the host's folder for one image: its tag (or digest), as a safe name
  local tag="${1##*[:@]}"
  tag="${tag//[^A-Za-z0-9_.-]/_}"
  echo "$deploy_dir/releases/${tag:0:64}"
}

pull() {
  if [ -n "${REGISTRY_PASSWORD:-}" ]; then
    printf '%s' "$REGISTRY_PASSWORD" \
      | remote docker login "${REGISTRY:?REGISTRY is not set}" \
        -u "${REGISTRY_USER:?REGISTRY_USER is not set}" --password-stdin >/dev/null
    remote docker pull --quiet "$1" || { remote docker logout "$REGISTRY" >/dev/null; exit 1; }
    remote docker logout "$REGISTRY" >/dev/null
  else
    remote docker pull --quiet "$1"
  fi
}

release() {  # strategy, image
  local dir
  dir="$(release_dir "$2")"
  remote sh -c 'cd "$1" && exec deploy/release/release.sh "$2" "$3"' release "$dir" "$1" "$2"
}

command="${1:-}"
case "$command" in
  deploy)
    strategy="${2:?usage: release-remote.sh deploy blue-green|rolling IMAGE}"
    image="${3:?usage: release-remote.sh deploy blue-green|rolling IMAGE}"
    case "$strategy" in blue-green|rolling) ;; *)
      echo "release-remote: unknown strategy $strategy" >&2; exit 2 ;;
    esac
    dir="$(release_dir "$image")"
    echo "release-remote: copying deploy/ to $DEPLOY_HOST:$dir"
    tar -czf - deploy | remote sh -c 'mkdir -p "$1" && tar -xzf - -C "$1"' copy "$dir"
    echo "release-remote: pulling $image on $DEPLOY_HOST"
    pull "$image"
    echo "release-remote: $strategy release of $image"
    release "$strategy" "$image"
    ;;
  current)
    remote sh -c 'cat "$1" 2>/dev/null || true' current "$deploy_dir/last-good-image"
    ;;
  record)
    image="${2:?usage: release-remote.sh record IMAGE}"
    remote sh -c 'printf "%s\n" "$2" > "$1.new" && mv "$1.new" "$1"' record \
      "$deploy_dir/last-good-image" "$image"
    ;;
  rollback)
    image="${2:?usage: release-remote.sh rollback IMAGE}"
    echo "release-remote: rolling back to $image"
    release blue-green "$image"
    ;;
  ship)
    strategy="${2:?usage: release-remote.sh ship blue-green|rolling IMAGE URL}"
    image="${3:?usage: release-remote.sh ship blue-green|rolling IMAGE URL}"
    url="${4:?usage: release-remote.sh ship blue-green|rolling IMAGE URL}"
    self="deploy/pipelines/release-remote.sh"
    previous="$("$self" current)"
    # A failed release has been rolled back by release.sh itself: nothing more to undo.
    "$self" deploy "$strategy" "$image"
    if deploy/pipelines/smoke.sh "$url"; then
      "$self" record "$image"
      exit 0
    fi
    if [ -z "$previous" ]; then
      echo "release-remote: $image failed its smoke test and no earlier release is recorded" >&2
      exit 1
    fi
    echo "release-remote: $image failed its smoke test; rolling back to $previous" >&2
    "$self" rollback "$previous"
    deploy/pipelines/smoke.sh "$url"
    exit 1
    ;;
  *)
    echo "usage: release-remote.sh deploy|current|record|rollback|ship ..." >&2
    exit 2
    ;;
esac
