#!/usr/bin/env bash
# The rules of cmschat.nft as ufw commands, for hosts managed with ufw instead:
# SSH from the admin range only, HTTP and HTTPS from anyone, MariaDB and Redis from the
# private network only, everything else inbound denied. Run as root; safe to run again.
#
#   ADMIN_RANGE=203.0.113.0/24 PRIVATE_NET=10.0.0.0/24 ./ufw.sh
#
# Use either this or cmschat.nft on a host, not both (ufw keeps its own nftables rules).
set -euo pipefail

: "${ADMIN_RANGE:?set ADMIN_RANGE to the addresses SSH may come from, e.g. 203.0.113.0/24}"
: "${PRIVATE_NET:?set PRIVATE_NET to the private network of the app and database hosts}"

ufw default deny incoming
ufw default allow outgoing

# Before enabling, so a remote session from the admin range is not cut off.
ufw allow proto tcp from "$ADMIN_RANGE" to any port 22 comment 'ssh from admins'
ufw allow proto tcp from any to any port 80 comment 'http (redirects to https)'
ufw allow proto tcp from any to any port 443 comment 'https'
ufw allow proto tcp from "$PRIVATE_NET" to any port 3306 comment 'mariadb, private network'
ufw allow proto tcp from "$PRIVATE_NET" to any port 6379 comment 'redis, private network'

ufw --force enable
ufw status verbose
