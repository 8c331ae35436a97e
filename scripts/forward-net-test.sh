#!/usr/bin/env bash
# Forwarding across a link that fails, between two hosts: PostgreSQL and
# nats-server (JetStream) run in a network namespace of their own, reached
# through a veth pair; the ignored test of cli/tests/forward_net.rs forwards
# to them from the root namespace while it takes the link down and up, then
# adds 20 % loss and 100 ms delay (tc netem; a kernel without netem gets
# iptables drops and a tbf throttle instead) on both ends and removes it, and
# measures local append latency meanwhile.
#
# Usage: scripts/forward-net-test.sh      (as root: namespaces need it)
#        ANNAL_NET_PHASE_SECONDS=15 scripts/forward-net-test.sh   (longer phases; default 8)
#
# Installs iproute2, postgresql and nats-server with apt-get if they are
# missing. The namespace, the veth pair and the servers are removed at exit,
# however the run ends.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "forward-net-test: $*" >&2; }
if [ "$(id -u)" != 0 ]; then
    say "must run as root (network namespaces, tc)"
    exit 1
fi

pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

need_install=()
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need_install+=(iproute2)
pg_bindir >/dev/null || need_install+=(postgresql)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_install+=(nats-server)
if [ ${#need_install[@]} -gt 0 ]; then
    say "installing ${need_install[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi
PGBIN="$(pg_bindir)"
NATS="$(command -v nats-server || echo /usr/sbin/nats-server)"

# Names unique to this run; interface names stay within 15 characters.
NS="annal-net-$$"
HOST_IF="anh$$"
PEER_IF="anp$$"
HOST_IP=10.213.7.1
PEER_IP=10.213.7.2
PG_PORT=5432
NATS_PORT=4222
PASSWORD="annal-net-secret"
WORK="$(mktemp -d /tmp/annal-forward-net.XXXXXX)"
chmod 755 "$WORK"
PGDATA="$WORK/pg"
in_ns() { ip netns exec "$NS" "$@"; }

cleanup() {
    set +e
    if [ -f "$PGDATA/postmaster.pid" ]; then
        in_ns runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ -f "$WORK/nats.pid" ]; then
        pid="$(cat "$WORK/nats.pid")"
        kill "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    fi
    if [ -n "${LOSS_RULE:-}" ]; then
        iptables-legacy -D $LOSS_RULE 2>/dev/null
    fi
    ip netns del "$NS" 2>/dev/null
    ip link del "$HOST_IF" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The second host: a namespace behind a veth pair.
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$PEER_IF"
ip link set "$PEER_IF" netns "$NS"
ip addr add "$HOST_IP/24" dev "$HOST_IF"
ip link set "$HOST_IF" up
in_ns ip addr add "$PEER_IP/24" dev "$PEER_IF"
in_ns ip link set "$PEER_IF" up
in_ns ip link set lo up

# PostgreSQL in it, listening on its veth address only.
mkdir -p "$PGDATA"
chown postgres "$PGDATA"
echo "$PASSWORD" >"$WORK/pwfile"
chmod 644 "$WORK/pwfile"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres --pwfile="$WORK/pwfile" -A scram-sha-256 \
    -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; exit 1; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '$PEER_IP'
port = $PG_PORT
unix_socket_directories = '$PGDATA'
EOF
echo "host all all $HOST_IP/32 scram-sha-256" >>"$PGDATA/pg_hba.conf"
in_ns runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/postgres.log" -w -t 60 start >/dev/null

# nats-server with JetStream in it.
# (ip netns exec execs it: $! is the server itself.)
ip netns exec "$NS" "$NATS" -js -sd "$WORK/nats" -a "$PEER_IP" -p "$NATS_PORT" --user annal --pass "$PASSWORD" \
    -l "$WORK/nats.log" &
echo $! >"$WORK/nats.pid"
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$PEER_IP/$NATS_PORT") 2>/dev/null && break
    sleep 0.1
done
(exec 3<>"/dev/tcp/$PEER_IP/$NATS_PORT") 2>/dev/null || { say "nats-server did not start"; cat "$WORK/nats.log" >&2; exit 1; }
say "PostgreSQL and $("$NATS" --version) in namespace $NS at $PEER_IP, reached through $HOST_IF"

export ANNAL_NET_PG_URL="postgres://postgres:$PASSWORD@$PEER_IP:$PG_PORT/postgres"
export ANNAL_NET_NATS_URL="nats://annal:$PASSWORD@$PEER_IP:$NATS_PORT"
export ANNAL_NET_DOWN="ip link set $HOST_IF down"
export ANNAL_NET_UP="ip link set $HOST_IF up"
# Loss and delay on both ends with netem; a kernel without sch_netem (some
# VMs have no modules) gets the nearest thing: 20 % of packets dropped on
# each end by iptables' statistic match, and the link throttled to 1 Mbit/s
# by tbf (queueing delay instead of a fixed one).
if tc qdisc add dev "$HOST_IF" root netem delay 1ms 2>/dev/null; then
    tc qdisc del dev "$HOST_IF" root
    export ANNAL_NET_LOSSY_NAME="netem loss 20% delay 100ms"
    export ANNAL_NET_LOSSY="tc qdisc add dev $HOST_IF root netem loss 20% delay 100ms && ip netns exec $NS tc qdisc add dev $PEER_IF root netem loss 20% delay 100ms"
    export ANNAL_NET_CLEAN="tc qdisc del dev $HOST_IF root && ip netns exec $NS tc qdisc del dev $PEER_IF root"
else
    command -v iptables-legacy >/dev/null 2>&1 || {
        say "installing iptables with apt-get (this kernel has no netem)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
    }
    say "this kernel has no netem: the lossy phase drops 20 % with iptables and throttles to 1 Mbit/s with tbf, without a fixed delay"
    DROP="-m statistic --mode random --probability 0.2 -j DROP"
    LOSS_RULE="INPUT -i $HOST_IF $DROP"
    export ANNAL_NET_LOSSY_NAME="loss 20% tbf 1mbit"
    export ANNAL_NET_LOSSY="iptables-legacy -I $LOSS_RULE && ip netns exec $NS iptables-legacy -I INPUT -i $PEER_IF $DROP && tc qdisc add dev $HOST_IF root tbf rate 1mbit burst 16kbit latency 400ms && ip netns exec $NS tc qdisc add dev $PEER_IF root tbf rate 1mbit burst 16kbit latency 400ms"
    export ANNAL_NET_CLEAN="iptables-legacy -D $LOSS_RULE && ip netns exec $NS iptables-legacy -D INPUT -i $PEER_IF $DROP && tc qdisc del dev $HOST_IF root && ip netns exec $NS tc qdisc del dev $PEER_IF root"
fi

started=$(date +%s)
cargo test -p annal-cli --test forward_net -- --ignored --test-threads=1 --nocapture
say "the link-failure test took $(($(date +%s) - started)) s"
