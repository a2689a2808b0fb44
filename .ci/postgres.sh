# Sourced by .ci/run (bash). A PostgreSQL server for the tests on
# $FBT_PG_HOST:$FBT_PG_PORT (default 127.0.0.1:5432), user postgres, trust auth.
#
#   ensure_postgres   uses the server answering there, or starts a throwaway
#                     one: the OS package `postgresql` is installed first when
#                     its binaries are missing and we are root with apt-get
#                     (without the packaged `main` cluster), then initdb with
#                     trust auth in a temp dir and pg_ctl start on that host
#                     and port (run as user postgres when we are root).
#                     Returns 1, with the reason, when neither works.
#   stop_postgres     stops the server ensure_postgres started (if any) and
#                     removes its temp dir; a server that was already
#                     running is left alone.
#
# Try it on a spare port without touching a running server:
#   FBT_PG_PORT=55432 bash -c 'source .ci/postgres.sh && ensure_postgres && psql -h 127.0.0.1 -p 55432 -U postgres -c "select 1" && stop_postgres'

FBT_CI_PG_DIR=""

pg_answers() {  # accepting connections on host:port?
  local host=$1 port=$2
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$host" -p "$port" -t 3
  else
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
  fi
}

pg_bindir() {  # newest installed server binaries (Debian layout, else PATH)
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
  elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  fi
}

ensure_postgres() {
  local host=${FBT_PG_HOST:-127.0.0.1} port=${FBT_PG_PORT:-5432} bindir owner as=()
  if pg_answers "$host" "$port"; then
    echo "postgresql: using the server at $host:$port"
    return 0
  fi
  bindir=$(pg_bindir)
  if [ -z "$bindir" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "postgresql: none at $host:$port; installing the OS package postgresql"
    # no packaged `main` cluster: it would take port 5432 with password auth on TCP
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/fbt-ci.conf
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || true
    bindir=$(pg_bindir)
  fi
  if [ -z "$bindir" ]; then
    echo "postgresql: none at $host:$port and no server binaries (not root or no apt-get): install postgresql" >&2
    return 1
  fi
  if [ "$(id -u)" = "0" ]; then  # the server refuses to run as root
    if ! id postgres >/dev/null 2>&1; then
      echo "postgresql: running as root and there is no user 'postgres' to run the server as" >&2
      return 1
    fi
    owner=postgres
    as=(runuser -u postgres --)
  else
    owner=$(id -un)
  fi
  FBT_CI_PG_DIR=$(mktemp -d /tmp/fbt-ci-postgres.XXXXXX)  # not $TMPDIR: user postgres must reach it
  chmod 755 "$FBT_CI_PG_DIR"
  chown "$owner" "$FBT_CI_PG_DIR"
  echo "postgresql: none at $host:$port; starting a throwaway cluster in $FBT_CI_PG_DIR ($bindir)"
  if ! "${as[@]}" "$bindir/initdb" -D "$FBT_CI_PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$FBT_CI_PG_DIR/initdb.log" 2>&1; then
    tail -n 20 "$FBT_CI_PG_DIR/initdb.log" >&2
    echo "postgresql: initdb failed" >&2
    return 1
  fi
  # test data only: no fsync; the socket goes in the temp dir (no /var/run/postgresql needed)
  if ! "${as[@]}" "$bindir/pg_ctl" -D "$FBT_CI_PG_DIR/data" -l "$FBT_CI_PG_DIR/postgres.log" -w -t 60 \
        -o "-c listen_addresses=$host -p $port -k $FBT_CI_PG_DIR -c fsync=off -c max_connections=200" \
        start >/dev/null; then
    tail -n 20 "$FBT_CI_PG_DIR/postgres.log" >&2
    echo "postgresql: the server did not start" >&2
    return 1
  fi
  if ! pg_answers "$host" "$port"; then
    echo "postgresql: started, but nothing answers at $host:$port" >&2
    return 1
  fi
  echo "postgresql: started at $host:$port (user postgres, trust auth; log $FBT_CI_PG_DIR/postgres.log)"
}

stop_postgres() {
  [ -n "$FBT_CI_PG_DIR" ] || return 0
  local bindir as=()
  bindir=$(pg_bindir)
  [ "$(id -u)" = "0" ] && as=(runuser -u postgres --)
  if [ -f "$FBT_CI_PG_DIR/data/postmaster.pid" ]; then
    "${as[@]}" "$bindir/pg_ctl" -D "$FBT_CI_PG_DIR/data" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$FBT_CI_PG_DIR"
  FBT_CI_PG_DIR=""
}
