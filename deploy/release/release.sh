#!/bin/sh
# The release tool (release.py, standard library only): see its --help and docs/deploy.md.
exec python3 "$(dirname "$0")/release.py" "$@"
