-- Run once, by the MariaDB image, when the data volume is first created (after it made the
-- database `cmschat` and the account `cmschat` from MARIADB_DATABASE/MARIADB_USER).
-- cmschat's scheduled backups and drills run as that account (docs/backup-restore.md,
-- "Permissions on MariaDB"): mariadb-dump --master-data needs RELOAD and BINLOG MONITOR,
-- incrementals read the binary log remotely (REPLICATION SLAVE), replaying them needs
-- BINLOG REPLAY, and a drill restores into a scratch database cmschat_drill_….
GRANT RELOAD, BINLOG MONITOR, REPLICATION SLAVE, BINLOG REPLAY ON *.* TO 'cmschat'@'%';
GRANT ALL PRIVILEGES ON `cmschat\_drill\_%`.* TO 'cmschat'@'%';
