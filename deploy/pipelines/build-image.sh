#!/usr/bin/env bash
# Builds the server image (deploy/docker/build.sh: the wheels first, with CPython 3.11 --
# set PYTHON if python3 is another version -- then the offline docker build) and pushes it;
# the same command in every CI system. The caller has logged in to the registry already.
#   deploy/pipelines/build-image.sh ghcr.io/owner/cmschat:COMMIT
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${1:?usage: build-image.sh IMAGE (registry/name:tag)}"
deploy/docker/build.sh --label "org.opencontainers.image.revision=${image##*:}" -t "$image"
docker push "$image"
