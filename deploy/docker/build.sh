#!/usr/bin/env sh
# Builds cmschat's image: the wheels of cmschat and every dependency into dist/wheels/ on
# this machine (with its network and pip cache; deploy/docker/wheels.py), then `docker build`
# from the repository root, which needs no network. Arguments go to docker build, e.g.
#   deploy/docker/build.sh -t cmschat:0.1.0
# PYTHON names the interpreter whose pip makes the wheels (default python3): it must be
# CPython 3.11 on the image's architecture, as the image's Python is. DOCKER names the
# docker client (default docker).
set -eu
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" deploy/docker/wheels.py dist/wheels
exec "${DOCKER:-docker}" build -f deploy/docker/Dockerfile "$@" .
