#!/usr/bin/env bash
# Builds the server image from deploy/docker/Dockerfile with the checkout as its context
# and pushes it; the same command in every CI system. The caller has logged in to the
# registry already.
#   deploy/pipelines/build-image.sh ghcr.io/owner/cmschat:COMMIT
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${1:?usage: build-image.sh IMAGE (registry/name:tag)}"
docker build -f deploy/docker/Dockerfile \
  --label "org.opencontainers.image.revision=${image##*:}" -t "$image" .
docker push "$image"
