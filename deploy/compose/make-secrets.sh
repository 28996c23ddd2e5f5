#!/bin/sh
# Writes the random secrets compose.yaml reads into secrets/ (next to this script), once:
# an existing file is kept, so running it again fills only what is missing. Needs openssl,
# and age-keygen (Debian: apt-get install age) for the backup key.
#
#   ./make-secrets.sh [DOMAIN]   DOMAIN names the self-signed certificate made when
#                                secrets/tls/ has none (default: localhost)
#
# The directory is 0700 (only you can open it); the files in it are 0444, because Docker
# Compose bind-mounts file secrets with their host owner and mode, and the services read
# them as their own users (mysql, grafana, nobody, cmschat), not as you.
#
# Not secrets, but also needed before the first `docker compose up`: nginx/active.conf, the
# upstream nginx sends traffic to (blue at first; ./switch-colour.sh changes it), and
# web-root/, the web client nginx serves. They are kept if they exist, like the secrets.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dir="$here/secrets"
domain=${1:-localhost}
umask 077
mkdir -p "$dir/tls"
chmod 0700 "$dir"

made=""
random() { openssl rand -hex "$1"; }
# new FILE CONTENT: writes FILE unless it exists.
new() {
    if [ ! -e "$dir/$1" ]; then
        printf '%s\n' "$2" > "$dir/$1"
        made="$made $1"
    fi
}

new mariadb_root_password "$(random 32)"
new mariadb_password "$(random 32)"
new redis.conf "requirepass $(random 32)"
new metrics_token "$(random 32)"
new grafana_admin_password "$(random 24)"

db_password=$(cat "$dir/mariadb_password")
redis_password=$(sed -n 's/^requirepass //p' "$dir/redis.conf")
new cmschat.env "# cmschat's secrets, read as /etc/cmschat/.env (compose.yaml sets the rest).
CMSCHAT_DATABASE_URL=mysql+asyncmy://cmschat:$db_password@mariadb:3306/cmschat
CMSCHAT_REDIS_URL=redis://:$redis_password@redis:6379/0
CMSCHAT_SECRET_KEY=$(random 48)
CMSCHAT_METRICS__TOKEN=$(cat "$dir/metrics_token")"

# Alertmanager's (deploy/monitoring/alertmanager.yml): not random, yours to fill in.
for file in alertmanager_smtp_password alertmanager_slack_webhook_url; do
    if [ ! -e "$dir/$file" ]; then
        : > "$dir/$file"
        made="$made $file"
        echo "make-secrets: $file is empty: put the real value in it (deploy/compose/README.md)"
    fi
done

if [ ! -e "$dir/tls/fullchain.pem" ]; then
    openssl req -x509 -newkey rsa:3072 -nodes -days 30 -subj "/CN=$domain" \
        -addext "subjectAltName=DNS:$domain" \
        -keyout "$dir/tls/privkey.pem" -out "$dir/tls/fullchain.pem" 2>/dev/null
    made="$made tls/fullchain.pem tls/privkey.pem"
    echo "make-secrets: a self-signed certificate for $domain, valid 30 days: replace" \
        "tls/fullchain.pem and tls/privkey.pem with real ones"
fi

# compose.yaml bind-mounts this one file into nginx: were it missing at `up`, Docker would
# create a directory in its place and nginx would not start. Readable by nginx (0644).
active="$here/nginx/active.conf"
if [ ! -e "$active" ]; then
    cat "$here/nginx/upstream.blue.conf" > "$active"
    chmod 0644 "$active"
    echo "make-secrets: nginx/active.conf sends traffic to blue (./switch-colour.sh changes it)"
fi

# The web client nginx serves: web-root/web (mounted as /srv/cmschat/web) is a link to a
# copy of a colour's client, which ./switch-colour.sh replaces with the copy out of the
# colour it switches to. Until the first switch, this checkout's web/. Readable by nginx.
if [ ! -e "$here/web-root/web" ]; then
    mkdir -p "$here/web-root"
    rm -rf "$here/web-root/web.checkout"
    cp -RL "$here/../../web" "$here/web-root/web.checkout"
    chmod -R a+rX "$here/web-root"
    ln -s web.checkout "$here/web-root/web"
    echo "make-secrets: web-root/web is this checkout's web client (./switch-colour.sh changes it)"
fi

status=0
if [ ! -e "$dir/backup-identity.txt" ]; then
    if command -v age-keygen > /dev/null; then
        age-keygen -o "$dir/backup-identity.txt" 2>/dev/null
        made="$made backup-identity.txt"
    else
        echo "make-secrets: age-keygen not found (Debian: apt-get install age); run again" \
            "to make secrets/backup-identity.txt" >&2
        status=1
    fi
fi
if [ -e "$dir/backup-identity.txt" ]; then
    echo "make-secrets: backups are encrypted to" \
        "$(sed -n 's/^# public key: //p' "$dir/backup-identity.txt"):" \
        "set CMSCHAT_BACKUP_RECIPIENTS to it in .env, and keep a copy of" \
        "secrets/backup-identity.txt off this host (without it no backup can be read)"
fi

find "$dir" -type f ! -name README.md ! -name .gitignore -exec chmod 0444 {} +
chmod 0700 "$dir/tls"
echo "make-secrets: wrote${made:- nothing (every secret already exists)}"
exit $status
