#!/bin/bash
# Entrypoint of the local test-server images that `cargo xtask images` builds. It takes the
# same command lines and environment as the official postgres, redis and mariadb images, so
# session-core's container fixtures run either kind unchanged:
#
#   postgres ARGS...      POSTGRES_HOST_AUTH_METHOD=trust, POSTGRES_DB=NAME
#   redis-server ARGS...
#   mariadbd ARGS...      MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1, MARIADB_DATABASE=NAME
#
# Each container is fresh: the data directory is created here and thrown away with it. The
# server's address comes from ARGS (the fixtures pass 127.0.0.1 and a free port).
set -euo pipefail

case "${1:-}" in
postgres)
  shift
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  data=/var/lib/session-test/postgres
  mkdir -p "$data" /run/postgresql
  chown postgres:postgres "$data" /run/postgresql
  auth=${POSTGRES_HOST_AUTH_METHOD:-trust}
  runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth="$auth" -E UTF8 >/dev/null
  db=${POSTGRES_DB:-postgres}
  if [ "$db" != postgres ]; then
    # Single-user mode: no socket is open before the real server starts, so a client that
    # reaches the port finds the database there.
    echo "CREATE DATABASE \"$db\";" |
      runuser -u postgres -- "$bin/postgres" --single -D "$data" postgres >/dev/null
  fi
  exec runuser -u postgres -- "$bin/postgres" -D "$data" -k /run/postgresql "$@"
  ;;
redis-server)
  shift
  exec runuser -u redis -- redis-server "$@"
  ;;
mariadbd | mysqld)
  shift
  data=/var/lib/session-test/mysql
  mkdir -p "$data" /run/mysqld
  chown mysql:mysql "$data" /run/mysqld
  mariadb-install-db --user=mysql --datadir="$data" --skip-test-db \
    --auth-root-authentication-method=normal >/dev/null
  init=/run/mysqld/init.sql
  {
    echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE:-test}\`;"
    if [ "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" = 1 ]; then
      # TCP clients from 127.0.0.1 are not 'localhost' to MariaDB.
      echo "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';"
      echo "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
    fi
  } >"$init"
  chown mysql:mysql "$init"
  exec mariadbd --user=mysql --datadir="$data" --init-file="$init" "$@"
  ;;
*)
  exec "$@"
  ;;
esac
