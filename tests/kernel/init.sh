#!/bin/sh
# /init of the test VM (busybox sh, PID 1): loads Linux kernel SCTP, turns on its UDP encapsulation (RFC 6951),
# runs our sctp_echo against the kernel in both directions over 127.0.0.1 and ::1, prints one line per scenario
#   SCENARIO <name>: pass | SCENARIO <name>: fail: <why>
# then the summary line tests/interop_kernel.rs reads,
#   KERNEL-INTEROP RESULT: pass | KERNEL-INTEROP RESULT: fail: <first failure>
# and powers the VM off. Options read from the kernel command line:
#   multiproto_log=LEVEL   MULTIPROTO_LOG for our sctp_echo processes (logs are shown for failed scenarios)
#   interop_only=A|B       run only phase A (kernel clients -> our server) or B (our client -> kernel servers)

export PATH=/bin:/sbin
mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp

first_fail=""
finish() {
	if [ -z "$first_fail" ]; then
		echo "KERNEL-INTEROP RESULT: pass"
	else
		echo "KERNEL-INTEROP RESULT: fail: $first_fail"
	fi
	sync
	poweroff -f
	sleep 10
	exit 0
}
fail() { # fail NAME WHY
	echo "SCENARIO $1: fail: $2"
	[ -n "$first_fail" ] || first_fail="$1: $2"
}
pass() { echo "SCENARIO $1: pass"; }
# Shows the tail of a log when something went wrong.
show() {
	echo "---- $1 (last ${2:-40} lines) ----"
	tail -n "${2:-40}" "$1"
	echo "---- end of $1 ----"
}

LOG=warn
ONLY=""
for w in $(cat /proc/cmdline); do
	case "$w" in
	multiproto_log=*) LOG="${w#multiproto_log=}" ;;
	interop_only=*) ONLY="${w#interop_only=}" ;;
	esac
done
export MULTIPROTO_LOG="$LOG"

echo "interop VM: kernel $(uname -r), $(nproc) cpu(s), up $(cut -d' ' -f1 /proc/uptime) s"
ip link set lo up || { fail setup "ip link set lo up"; finish; }

# Modules, in dependency order (build.sh wrote the order).
for m in $(cat /lib/modules/order); do
	insmod "/lib/modules/$m" || { fail setup "insmod $m"; finish; }
done
[ -e /proc/sys/net/sctp/udp_port ] || { fail setup "kernel has no net.sctp.udp_port (SCTP over UDP needs >= 5.11)"; finish; }

KUDP=9899      # the kernel's SCTP-over-UDP port (net.sctp.udp_port)
OURUDP=30000   # our echo server's UDP port (IPv4)
OURUDP6=30002  # our echo server's UDP port (IPv6)
# Large socket buffers so 256 KiB messages and 64 KiB loopback packets fit.
sysctl -q -w net.core.rmem_max=8388608 net.core.wmem_max=8388608
# The kernel listens for SCTP over UDP on $KUDP. Its default remote encapsulation port stays 0 (plain SCTP):
# its clients set SCTP_REMOTE_UDP_ENCAPS_PORT per socket, its servers answer on the UDP port each INIT came
# from.
sysctl -q -w net.sctp.udp_port=$KUDP || { fail setup "sysctl net.sctp.udp_port"; finish; }
echo "kernel sctp: udp_port=$(cat /proc/sys/net/sctp/udp_port) encap_port=$(cat /proc/sys/net/sctp/encap_port)"

# Waits up to $2 tenths of a second for file $1 to contain $3.
wait_for() {
	i=0
	while [ $i -lt "$2" ]; do
		grep -q -- "$3" "$1" 2>/dev/null && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
count_of() { grep -c -- "$2" "$1" 2>/dev/null || true; }
# Waits up to $2 tenths of a second for file $1 to hold $3 lines containing $4.
wait_count() {
	i=0
	while [ $i -lt "$2" ]; do
		[ "$(count_of "$1" "$4")" -ge "$3" ] && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# Starts our echo server on UDP $1 (ADDR:PORT), logging to $2; sets $server.
start_our_server() {
	sctp_echo listen --udp "$1" --port 7 2>"$2" &
	server=$!
	wait_for "$2" 100 "listening on"
}

# ---- Phase A: kernel SCTP clients -> our echo server ---------------------------------------------------------
phase_a() {
	if ! start_our_server 127.0.0.1:$OURUDP /tmp/server.err; then
		fail A-start "our echo server did not start"
		show /tmp/server.err
		return
	fi
	DOWN="assoc down 127.0.0.1:$KUDP shutdown"
	downs=0
	# NAME then ksctp client options: message i goes on stream i % K with PPID i; every echo is checked.
	while read -r name args; do
		[ -n "$name" ] || continue
		# shellcheck disable=SC2086
		timeout 90 ksctp client 127.0.0.1 7 --encap-port $OURUDP $args >/tmp/client.out 2>&1
		rc=$?
		cat /tmp/client.out
		downs=$((downs + 1))
		if [ $rc -ne 0 ] || ! grep -q "ksctp client ok" /tmp/client.out; then
			fail "$name" "kernel client exit $rc: $(grep FAIL /tmp/client.out | head -n 1)"
			show /tmp/server.err
		elif ! wait_count /tmp/server.err 100 $downs "$DOWN"; then
			fail "$name" "our server logged no graceful '$DOWN' for it"
			show /tmp/server.err
		else
			pass "$name"
		fi
	done <<-EOF
		A1-kernel-client-small --count 100 --size 100
		A2-kernel-client-16-streams --count 320 --size 1 --streams 16 --window 16
		A3-kernel-client-fragmented-100k --count 12 --size 100000 --streams 4 --window 2
		A4-kernel-client-256k --count 4 --size 262144 --streams 2 --window 2
		A5-kernel-client-unordered --count 64 --size 3000 --streams 8 --unordered --window 8
		A6-kernel-client-idle-heartbeats --count 10 --size 500 --streams 2 --idle 4 --hb-interval 300
	EOF

	# Two kernel associations at once.
	timeout 90 ksctp client 127.0.0.1 7 --encap-port $OURUDP --count 100 --size 2000 --streams 3 --window 4 \
		>/tmp/c1.out 2>&1 &
	c1=$!
	timeout 90 ksctp client 127.0.0.1 7 --encap-port $OURUDP --count 100 --size 700 --streams 5 --window 4 \
		--unordered >/tmp/c2.out 2>&1 &
	c2=$!
	wait $c1; r1=$?
	wait $c2; r2=$?
	cat /tmp/c1.out /tmp/c2.out
	downs=$((downs + 2))
	if [ $r1 -ne 0 ] || [ $r2 -ne 0 ]; then
		fail A7-two-kernel-clients-at-once "exit $r1/$r2: $(grep -h FAIL /tmp/c1.out /tmp/c2.out | head -n 1)"
		show /tmp/server.err
	elif ! wait_count /tmp/server.err 100 $downs "$DOWN"; then
		fail A7-two-kernel-clients-at-once "our server did not log both graceful shutdowns"
		show /tmp/server.err
	else
		pass A7-two-kernel-clients-at-once
	fi

	# Our server shuts down (SIGTERM) while a kernel association is open: the kernel must see a graceful
	# SHUTDOWN from us, and our server must exit 0.
	timeout 90 ksctp client 127.0.0.1 7 --encap-port $OURUDP --count 20 --size 1000 --streams 2 \
		--expect-peer-shutdown >/tmp/c3.out 2>&1 &
	c3=$!
	downs=$((downs + 1))
	if ! wait_for /tmp/c3.out 300 "waiting for the peer's SHUTDOWN"; then
		fail A8-our-server-shuts-down-kernel-client "kernel client never got its echoes: $(grep FAIL /tmp/c3.out)"
	fi
	ups=$(count_of /tmp/server.err "assoc up 127.0.0.1:$KUDP")
	kill -TERM $server
	wait $server
	rc=$?
	wait $c3
	r3=$?
	cat /tmp/c3.out
	echo "our server: $ups associations up, $(count_of /tmp/server.err "$DOWN") shut down gracefully, exit $rc"
	if [ $r3 -ne 0 ] || ! grep -q "ksctp client ok:.*peer shutdown" /tmp/c3.out; then
		fail A8-our-server-shuts-down-kernel-client "kernel client exit $r3: $(grep FAIL /tmp/c3.out | head -n 1)"
		show /tmp/server.err
	elif [ $rc -ne 0 ] || [ "$ups" -ne $downs ] || [ "$(count_of /tmp/server.err "$DOWN")" -ne $downs ]; then
		fail A8-our-server-shuts-down-kernel-client "our server exit $rc, $ups associations up, $(count_of /tmp/server.err "$DOWN") shut down, $downs expected"
		show /tmp/server.err
	else
		pass A8-our-server-shuts-down-kernel-client
	fi

	# IPv6: the kernel client on ::1 to our server on [::1].
	if ! start_our_server "[::1]:$OURUDP6" /tmp/server6.err; then
		fail A9-kernel-client-ipv6 "our IPv6 echo server did not start"
		show /tmp/server6.err
		return
	fi
	timeout 90 ksctp client ::1 7 --encap-port $OURUDP6 --count 50 --size 5000 --streams 4 --window 4 \
		>/tmp/c6.out 2>&1
	rc=$?
	cat /tmp/c6.out
	if [ $rc -ne 0 ] || ! grep -q "ksctp client ok" /tmp/c6.out; then
		fail A9-kernel-client-ipv6 "kernel client exit $rc: $(grep FAIL /tmp/c6.out | head -n 1)"
		show /tmp/server6.err
	elif ! wait_for /tmp/server6.err 100 "assoc down \[::1\]:$KUDP shutdown"; then
		fail A9-kernel-client-ipv6 "our server logged no graceful 'assoc down [::1]:$KUDP shutdown'"
		show /tmp/server6.err
	else
		pass A9-kernel-client-ipv6
	fi
	kill -TERM $server
	wait $server
}

# ---- Phase B: our client -> kernel SCTP echo and discard servers ---------------------------------------------
# Starts "ksctp server PORT ARGS..." logging to /tmp/kserver-PORT.out; returns nonzero if it did not start.
start_kernel_server() {
	port_=$1
	shift
	timeout 200 ksctp server "$port_" --streams 16 --timeout 180 "$@" >/tmp/kserver-"$port_".out 2>&1 &
	wait_for /tmp/kserver-"$port_".out 100 "listening"
}
# Runs our client: NAME UDPPORT SCTPPORT ARGS...
our_client() {
	name_=$1
	udp_=$2
	sport_=$3
	shift 3
	case " $* " in
	*" --timeout "*) t_="" ;;
	*) t_="--timeout 60" ;;
	esac
	# shellcheck disable=SC2086
	timeout 90 sctp_echo connect --udp "$udp_" --to "$TO" --port "$sport_" $t_ "$@" \
		>/tmp/our.out 2>/tmp/our.err
	rc_=$?
	echo "sctp_echo connect --udp $udp_ --to $TO --port $sport_ $*: exit $rc_: $(cat /tmp/our.out) $(tail -n 1 /tmp/our.err)"
	if [ $rc_ -eq 0 ] && grep -q "^ok " /tmp/our.out; then
		pass "$name_"
	else
		fail "$name_" "our client exit $rc_: $(tail -n 1 /tmp/our.err)"
		show /tmp/our.err
		show /tmp/kserver-"$sport_".out 10
	fi
}
# Waits for kernel server PID $1 on port $2 and checks it reported $3 graceful associations and $4.
check_kernel_server() {
	wait "$1"
	rc_=$?
	cat /tmp/kserver-"$2".out
	if [ $rc_ -eq 0 ] && grep -q "ksctp server ok: $3 associations shut down gracefully, $4" /tmp/kserver-"$2".out; then
		pass "$5"
	else
		fail "$5" "kernel server on port $2 exit $rc_: $(grep FAIL /tmp/kserver-"$2".out | head -n 1)"
	fi
}

phase_b() {
	TO=127.0.0.1:$KUDP
	start_kernel_server 5001 --assocs 5 || { fail B-start "kernel echo server did not start"; return; }
	kecho=$!
	start_kernel_server 5009 --assocs 1 --discard || { fail B-start "kernel discard server did not start"; return; }
	kdiscard=$!
	start_kernel_server 5006 --assocs 1 --ipv6 || { fail B-start "kernel IPv6 echo server did not start"; return; }
	kecho6=$!
	start_kernel_server 5010 --assocs 1 --discard || { fail B-start "kernel discard server did not start"; return; }
	kdiscard2=$!
	our_client B1-our-client-small 127.0.0.1:30011 5001 --count 100 --size 100
	our_client B2-our-client-stream-7-tiny 127.0.0.1:30012 5001 --count 300 --size 1 --stream 7
	our_client B3-our-client-fragmented-100k 127.0.0.1:30013 5001 --count 10 --size 100000 --stream 3
	our_client B4-our-client-256k-unordered 127.0.0.1:30014 5001 --count 4 --size 262144 --stream 15 --unordered
	our_client B5-our-client-unordered 127.0.0.1:30015 5001 --count 64 --size 3000 --stream 9 --unordered
	our_client B6-our-client-to-discard 127.0.0.1:30016 5009 --count 800 --size 1500 --stream 1 --no-echo
	TO="[::1]:$KUDP"
	our_client B7-our-client-ipv6 "[::1]:30017" 5006 --count 50 --size 5000 --stream 2
	check_kernel_server $kecho 5001 5 "478 messages (2250876 bytes) echoed" B8-kernel-echo-server-saw-graceful-shutdowns
	check_kernel_server $kdiscard 5009 1 "800 messages (1200000 bytes) received" B9-kernel-discard-server-got-everything
	check_kernel_server $kecho6 5006 1 "50 messages (250000 bytes) echoed" B10-kernel-ipv6-echo-server
	# Everything fits in the send buffer before the association is up: the data must still all arrive
	# before the client reports success.
	TO=127.0.0.1:$KUDP
	our_client B11-our-client-no-echo-small 127.0.0.1:30020 5010 --count 3 --size 100 --no-echo --timeout 10
	check_kernel_server $kdiscard2 5010 1 "3 messages (300 bytes) received" B12-kernel-discard-server-got-the-3-messages
}

[ "$ONLY" = "" ] || [ "$ONLY" = A ] && phase_a
[ "$ONLY" = "" ] || [ "$ONLY" = B ] && phase_b

# The kernel's view: SCTP counters, and anything it logged about SCTP.
echo "kernel sctp counters: $(awk '$1 ~ /^Sctp(CurrEstab|ActiveEstabs|PassiveEstabs|Aborteds|Shutdowns|OutOfBlues|ChecksumErrors|T1InitExpireds|T1CookieExpireds|T2ShutdownExpireds|T3RtxExpireds|T3Retransmits|FastRetransmits|InPktDiscards|InDataChunkDiscards|InSCTPPacks|OutSCTPPacks)$/ {printf "%s=%s ", substr($1, 5), $2}' /proc/net/sctp/snmp)"
dmesg | grep -i -E 'sctp|udp' | sed 's/^/kernel log: /'
cksum_errors=$(awk '$1 == "SctpChecksumErrors" {print $2}' /proc/net/sctp/snmp)
if [ "$cksum_errors" = 0 ]; then
	pass K-kernel-saw-no-checksum-errors
else
	fail K-kernel-saw-no-checksum-errors "SctpChecksumErrors=$cksum_errors"
fi
echo "interop VM: done at $(cut -d' ' -f1 /proc/uptime) s"
finish
