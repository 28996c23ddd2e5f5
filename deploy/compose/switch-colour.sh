#!/bin/sh
# Sends nginx's traffic to the other colour without recreating nginx (README.md, "5.
# Switching colours"): copies COLOUR's web client out of its container, writes
# nginx/upstream.COLOUR.conf into nginx/active.conf (mounted as
# /etc/nginx/cmschat/upstream.conf), tests nginx's configuration and reloads it, then points
# web-root/web (what nginx serves) at the copy. New connections go to COLOUR at once; those
# in progress finish on nginx's old workers.
#
#   ./switch-colour.sh blue|green   refuses unless cmschat-COLOUR is healthy; if nginx
#                                   refuses the file or the reload fails, puts the previous
#                                   one back (nginx/active.conf.previous keeps a copy)
#   ./switch-colour.sh status       prints the active colour: blue, green (or unknown,
#                                   exit 1)
#
# Exit status: 0 switched (or status printed), 1 refused or failed (nginx unchanged),
# 2 usage. Runs from any directory: docker compose runs in this script's directory.
# One switch at a time: a second one started meanwhile (another operator, a pipeline) is
# refused at once (flock on nginx/.switch.lock) rather than interleaving its rewrite and
# restore with the first one's.
set -eu

usage() {
    echo "usage: switch-colour.sh blue|green|status" >&2
    exit 2
}
fail() {
    echo "switch-colour: $*" >&2
    exit 1
}

[ $# -eq 1 ] || usage
case "$1" in
    blue | green | status) ;;
    *) usage ;;
esac

cd "$(dirname "$0")"
active=nginx/active.conf
previous=nginx/active.conf.previous

if [ ! -f "$active" ]; then
    # A directory if `docker compose up` ran before make-secrets.sh: Docker creates one
    # where a bind-mount source is missing.
    fail "$active is not a file: run ./make-secrets.sh before docker compose up (README.md)"
fi

# The colour whose cmschat the upstream in FILE names, or "unknown".
colour_of() {
    for name in blue green; do
        if grep -Eq "^[[:space:]]*server[[:space:]]+cmschat-$name:8000[[:space:]]*;" "$1"; then
            echo "$name"
            return
        fi
    done
    echo unknown
}

if [ "$1" = status ]; then
    now=$(colour_of "$active")
    echo "$now"
    [ "$now" != unknown ] || exit 1
    exit 0
fi
colour=$1

exec 9> nginx/.switch.lock
flock -n 9 || fail "another switch-colour.sh is running: nothing switched"

id=$(docker compose ps -q "cmschat-$colour") || fail "docker compose ps failed: nothing switched"
[ -n "$id" ] || fail "cmschat-$colour is not running: nothing switched"
health=$(docker inspect --format '{{.State.Health.Status}}' "$id" 2>/dev/null) || health=""
[ "$health" = healthy ] || fail "cmschat-$colour is ${health:-of unknown health}, not healthy: nothing switched"

# COLOUR's own web client, beside the live one, before anything changes (deploy/release
# copies it from the same place in the image). Kept with the previous one, as the way back.
web_in_image=/opt/cmschat/lib/python3.11/site-packages/cmschat/web
[ -L web-root/web ] || fail "web-root/web is not a link: run ./make-secrets.sh (README.md): nothing switched"
copy="web.$colour.$(date +%Y%m%d%H%M%S).$$"
if ! out=$(docker compose cp "cmschat-$colour:$web_in_image/." "web-root/$copy" 2>&1); then
    rm -rf "web-root/$copy"
    fail "could not copy cmschat-$colour's web client, nothing switched: $(printf '%s\n' "$out" | tail -n 1)"
fi
chmod -R a+rX "web-root/$copy"

cp "$active" "$previous"
# In place, never a new file renamed over the old one: compose.yaml bind-mounts this single
# file, and such a mount pins the file's inode, so the container keeps seeing the old inode
# after a `mv` or an editor's save-by-rename. `cat >` truncates and rewrites the same inode,
# which nginx in the container then reads.
restore() {
    cat "$previous" > "$active"
    rm -rf "web-root/$copy"
}
cat "nginx/upstream.$colour.conf" > "$active"

# nginx -t also resolves cmschat-COLOUR. Of a failure, the one line printed ends with the
# last line nginx or docker wrote.
if ! out=$(docker compose exec -T nginx nginx -t 2>&1); then
    restore
    fail "nginx refused upstream.$colour.conf, $(colour_of "$active") stays active: $(printf '%s\n' "$out" | tail -n 1)"
fi
if ! out=$(docker compose exec -T nginx nginx -s reload 2>&1); then
    # nginx -s reload fails before signalling the master (no container, no pid file): nginx
    # still runs the previous configuration, which the file again matches.
    restore
    fail "nginx reload failed, $(colour_of "$active") stays active: $(printf '%s\n' "$out" | tail -n 1)"
fi
# The client follows: a new link renamed over the old one, so nginx serves one copy or the
# other, never a mix. The previous copy stays (the way back); older ones go.
before=$(readlink web-root/web)
ln -s "$copy" web-root/web.link
mv -T web-root/web.link web-root/web
for old in web-root/web.*; do
    case "${old#web-root/}" in
        "$copy" | "$before" | web.link) ;;
        *) rm -rf "$old" ;;
    esac
done
echo "switch-colour: $colour is active (nginx reloaded, web client $copy)"
