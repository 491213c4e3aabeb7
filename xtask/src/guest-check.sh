#!/bin/bash
# Runs in the QEMU guest (xtask/src/guest.rs) as a oneshot unit under
# systemd: installs the package as a user would and reports each check as
# `@@ship NAME ok|FAIL DETAIL` on the console, then powers off.
cd /opt/ship || exit 1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
report() { # name, condition (0 = ok), detail
    if [ "$2" -eq 0 ]; then echo "@@ship $1 ok $3"; else echo "@@ship $1 FAIL $3"; fi
}
tcpext() {
    awk -v k="$1" '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) col[$i] = i; h = 1 } else print $col[k] }' /proc/net/netstat
}
unread_metric() {
    curl -s --max-time 5 http://127.0.0.1:9741/metrics |
        awk '/^sockprobe_tcp_unread_closes_total\{/ && /comm="ship-unread"/ { s += $2 } END { print s + 0 }'
}
# Tracing programs loaded (sockprobe's are tracing and iterator programs;
# systemd's own are cgroup programs).
tracing_progs() { bpftool prog show 2>/dev/null | grep -cE '^[0-9]+: (tracing|raw_tracepoint|tracepoint|kprobe) '; }
wait_ready() {
    for _ in $(seq 240); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:9741/healthz)" = 200 ] && return 0
        sleep 1
    done
    return 1
}
# A server and a client that closes 10 connections with 99 990 bytes unread:
# the daemon's count must equal the kernel's TCPAbortOnClose.
scenario() {
    local before after want got
    before=$(tcpext TCPAbortOnClose)
    ./sockprobe-peer --name ship-unread client --connect 127.0.0.1:7000 --response 100000 --read 10 --connections 10 >/dev/null 2>&1
    after=$(tcpext TCPAbortOnClose)
    want=$((after - before))
    for _ in $(seq 30); do
        got=$(unread_metric)
        [ "$got" = "$want" ] && break
        sleep 1
    done
    report "$1" "$([ "$got" = "$want" ] && [ "$want" = 10 ]; echo $?)" "metric=$got TCPAbortOnClose=$want"
}

echo "@@ship-start $(uname -r)"
base_progs=$(tracing_progs)
DEBIAN_FRONTEND=noninteractive apt-get install -y ./sockprobe.deb >/tmp/apt.log 2>&1
report install $? "$(tail -1 /tmp/apt.log)"
for _ in $(seq 120); do systemctl is-active -q sockprobe && break; sleep 1; done
report enabled "$([ "$(systemctl is-enabled sockprobe)" = enabled ]; echo $?)" "$(systemctl is-enabled sockprobe)"
wait_ready
report active $? "$(systemctl is-active sockprobe)"
pid=$(systemctl show -p MainPID --value sockprobe)
cap=$(awk '/^CapEff/ { print $2 }' "/proc/$pid/status")
# CAP_PERFMON (38) and CAP_BPF (39): bits 38 and 39, nothing else.
report capabilities "$([ "$cap" = 000000c000000000 ]; echo $?)" "CapEff=$cap"
uid=$(awk '/^Uid/ { print $2 }' "/proc/$pid/status")
report dynamic-user "$([ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ]; echo $?)" "uid=$uid"
./sockprobe-peer --name ship-srv server --listen 127.0.0.1:7000 --response 100000 --connections 1000 >/dev/null 2>&1 &
sleep 1
scenario unread-closes
systemctl restart sockprobe
wait_ready
pid2=$(systemctl show -p MainPID --value sockprobe)
report restart "$([ -n "$pid2" ] && [ "$pid2" != 0 ] && [ "$pid2" != "$pid" ]; echo $?)" "pid $pid -> $pid2"
scenario unread-closes-after-restart
# The daemon's own warnings and errors (env_logger's level word).
bad=$(journalctl -u sockprobe --no-pager -o cat | grep -cE '^\[[^]]* (WARN|ERROR)')
report journal "$([ "$bad" = 0 ]; echo $?)" "$bad warning or error lines"
journalctl -u sockprobe --no-pager -o cat | grep -E '(WARN|ERROR)' | head -5 | sed 's/^/  journal: /'
score=$(systemd-analyze security sockprobe --no-pager 2>/dev/null | awk '/Overall exposure level/ { print $(NF-2), $(NF-1) }')
report security-score "$([ -n "$score" ]; echo $?)" "$score"
running_progs=$(tracing_progs)
systemctl stop sockprobe
sleep 2
left=$(tracing_progs)
report stop-detaches "$([ "$running_progs" -gt "$base_progs" ] && [ "$left" = "$base_progs" ]; echo $?)" \
    "tracing programs: $base_progs before install, $running_progs running, $left after stop"
systemctl start sockprobe
wait_ready
pid3=$(systemctl show -p MainPID --value sockprobe)
DEBIAN_FRONTEND=noninteractive apt-get install -y ./sockprobe-upgrade.deb >/tmp/apt.log 2>&1
wait_ready
pid4=$(systemctl show -p MainPID --value sockprobe)
report upgrade-restarts "$([ "$(dpkg-query -W -f='${Version}' sockprobe)" = 0.1.0-2 ] && [ "$pid4" != "$pid3" ] && systemctl is-active -q sockprobe; echo $?)" \
    "version $(dpkg-query -W -f='${Version}' sockprobe), pid $pid3 -> $pid4"
DEBIAN_FRONTEND=noninteractive apt-get remove -y sockprobe >/tmp/apt.log 2>&1
sleep 1
report remove-stops "$(! systemctl is-active -q sockprobe && [ "$(tracing_progs)" = "$base_progs" ]; echo $?)" "$(systemctl is-active sockprobe)"
report remove-keeps-config "$([ -f /etc/sockprobe/sockprobe.toml ]; echo $?)" "$(ls /etc/sockprobe 2>&1)"
DEBIAN_FRONTEND=noninteractive apt-get purge -y sockprobe >/tmp/apt.log 2>&1
report purge-drops-config "$([ ! -e /etc/sockprobe/sockprobe.toml ]; echo $?)" "$(ls /etc/sockprobe 2>&1)"
echo "@@ship-end"
systemctl poweroff -f
