/*
 * ksctp: the Linux kernel SCTP side of tests/interop_kernel.rs. Runs inside the test VM (statically linked).
 *
 *   ksctp server PORT [--assocs N] [--streams N] [--discard] [--ipv6] [--timeout SECS]
 *       One-to-many (SOCK_SEQPACKET) echo server on 0.0.0.0:PORT ([::]:PORT with --ipv6): every message goes back on the association,
 *       stream, PPID and ordering it came with (with --discard, messages are only counted). Logs each
 *       association change. Exits once N associations have
 *       ended: 0 and "ksctp server ok: ..." if all ended by a graceful shutdown (SCTP_SHUTDOWN_COMP), else
 *       1 and "ksctp server FAIL: ...".
 *
 *   ksctp client ADDR PORT [--count N] [--size BYTES] [--streams K] [--unordered] [--window W]
 *                          [--encap-port UDPPORT] [--hb-interval MS] [--idle SECS] [--expect-peer-shutdown]
 *                          [--timeout SECS]
 *       One-to-one (SOCK_STREAM) client (ADDR IPv4 or IPv6): connects (over UDP if --encap-port, set with the
 *       per-socket option SCTP_REMOTE_UDP_ENCAPS_PORT), sends N messages of BYTES bytes, message i on stream
 *       i % K with PPID i, keeps up to W messages in flight, checks each echo (bytes, stream, PPID, ordering
 *       flag). With --idle, then stays idle SECS seconds (heartbeats only) and checks one more echo; with
 *       --hb-interval the kernel heartbeats every MS ms + RTO and the path must still be ACTIVE after the idle
 *       time (the path fails after 2 unanswered heartbeats). Then shuts down with shutdown(SHUT_WR) and waits for SCTP_SHUTDOWN_COMP, or with
 *       --expect-peer-shutdown prints "ksctp client: waiting for the peer's SHUTDOWN" and waits for the peer
 *       to shut the association down. Prints "ksctp client ok: ..." and exits 0, or "ksctp client FAIL: ..."
 *       and exits 1.
 *
 * Only the kernel's UAPI header <linux/sctp.h> is used (linux-libc-dev, which libc6-dev pulls in): no libsctp.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/sctp.h>

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

static const char *role = "ksctp";

static void fail(const char *fmt, ...)
{
	va_list ap;
	printf("%s FAIL: ", role);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits until fd is readable (or writable), or fails once the deadline has passed. */
static void wait_fd(int fd, short ev, double deadline, const char *what)
{
	for (;;) {
		double left = deadline - now_s();
		if (left <= 0)
			fail("timed out waiting to %s", what);
		struct pollfd p = { .fd = fd, .events = ev };
		int r = poll(&p, 1, (int)(left * 1000) + 1);
		if (r > 0)
			return;
		if (r < 0 && errno != EINTR)
			fail("poll: %s", strerror(errno));
	}
}

/* Byte j of message k: its index in the first four bytes, then a pattern that depends on the index. */
static void fill_message(unsigned char *m, size_t size, uint32_t k)
{
	for (size_t j = 0; j < size; j++)
		m[j] = (unsigned char)((uint32_t)j * 13u + k * 7u + 1u);
	if (size >= 4) {
		uint32_t be = htonl(k);
		memcpy(m, &be, 4);
	}
}

static void setopt(int fd, int level, int name, const void *v, socklen_t len, const char *what)
{
	if (setsockopt(fd, level, name, v, len) < 0)
		fail("setsockopt %s: %s", what, strerror(errno));
}

static void common_opts(int fd, int streams)
{
	struct sctp_initmsg im = { .sinit_num_ostreams = streams, .sinit_max_instreams = streams };
	setopt(fd, IPPROTO_SCTP, SCTP_INITMSG, &im, sizeof im, "SCTP_INITMSG");
	int on = 1;
	setopt(fd, IPPROTO_SCTP, SCTP_RECVRCVINFO, &on, sizeof on, "SCTP_RECVRCVINFO");
	uint16_t types[] = { SCTP_ASSOC_CHANGE, SCTP_SHUTDOWN_EVENT, SCTP_REMOTE_ERROR, SCTP_SEND_FAILED_EVENT };
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		struct sctp_event e = { .se_assoc_id = SCTP_FUTURE_ASSOC, .se_type = types[i], .se_on = 1 };
		setopt(fd, IPPROTO_SCTP, SCTP_EVENT, &e, sizeof e, "SCTP_EVENT");
	}
	int buf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
}

static const char *state_name(int s)
{
	switch (s) {
	case SCTP_COMM_UP: return "COMM_UP";
	case SCTP_COMM_LOST: return "COMM_LOST";
	case SCTP_RESTART: return "RESTART";
	case SCTP_SHUTDOWN_COMP: return "SHUTDOWN_COMP";
	case SCTP_CANT_STR_ASSOC: return "CANT_STR_ASSOC";
	default: return "?";
	}
}

/* One piece of a message or notification as recvmsg returns it. */
struct piece {
	ssize_t len;
	int flags;
	int have_info;
	struct sctp_rcvinfo info;
};

static struct piece recv_piece(int fd, unsigned char *buf, size_t cap)
{
	char cbuf[CMSG_SPACE(sizeof(struct sctp_rcvinfo)) + 64];
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
	struct piece p = { 0 };
	p.len = recvmsg(fd, &mh, MSG_DONTWAIT);
	if (p.len < 0)
		return p;
	p.flags = mh.msg_flags;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == IPPROTO_SCTP && c->cmsg_type == SCTP_RCVINFO) {
			memcpy(&p.info, CMSG_DATA(c), sizeof p.info);
			p.have_info = 1;
		}
	}
	return p;
}

static void send_message(int fd, const void *data, size_t len, uint16_t sid, uint16_t flags, uint32_t ppid,
			 sctp_assoc_t assoc, double deadline)
{
	char cbuf[CMSG_SPACE(sizeof(struct sctp_sndinfo))];
	memset(cbuf, 0, sizeof cbuf);
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = IPPROTO_SCTP;
	c->cmsg_type = SCTP_SNDINFO;
	c->cmsg_len = CMSG_LEN(sizeof(struct sctp_sndinfo));
	struct sctp_sndinfo si = { .snd_sid = sid, .snd_flags = flags, .snd_ppid = ppid, .snd_assoc_id = assoc };
	memcpy(CMSG_DATA(c), &si, sizeof si);
	for (;;) {
		ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT);
		if (n == (ssize_t)len)
			return;
		if (n >= 0)
			fail("sendmsg sent %zd of %zu bytes", n, len);
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			wait_fd(fd, POLLOUT, deadline, "send");
			continue;
		}
		fail("sendmsg (%zu bytes, stream %u): %s", len, sid, strerror(errno));
	}
}

/* ---- server ---- */

#define MAX_MSG (1 << 20)

static int server(int argc, char **argv)
{
	role = "ksctp server";
	if (argc < 1)
		fail("usage: ksctp server PORT [--assocs N] [--streams N] [--discard] [--timeout SECS]");
	int port = atoi(argv[0]);
	int want = 1, streams = 16, timeout = 120, discard = 0, ipv6 = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--assocs") && i + 1 < argc)
			want = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--streams") && i + 1 < argc)
			streams = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--discard"))
			discard = 1;
		else if (!strcmp(argv[i], "--ipv6"))
			ipv6 = 1;
		else
			fail("unknown argument %s", argv[i]);
	}
	double deadline = now_s() + timeout;
	int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP);
	if (fd < 0)
		fail("socket(%s, SOCK_SEQPACKET, IPPROTO_SCTP): %s", ipv6 ? "AF_INET6" : "AF_INET", strerror(errno));
	common_opts(fd, streams);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT };
	int r = ipv6 ? bind(fd, (struct sockaddr *)&sa6, sizeof sa6) : bind(fd, (struct sockaddr *)&sa, sizeof sa);
	if (r < 0)
		fail("bind port %d: %s", port, strerror(errno));
	if (listen(fd, 16) < 0)
		fail("listen: %s", strerror(errno));
	printf("ksctp server: listening on sctp port %d%s%s\n", port, ipv6 ? " (IPv6)" : "",
	       discard ? " (discard)" : "");
	fflush(stdout);

	unsigned char *buf = malloc(MAX_MSG);
	size_t have = 0; /* bytes of a partly received message (the kernel does not interleave associations) */
	struct sctp_rcvinfo first = { 0 };
	int ended = 0, graceful = 0;
	long echoed = 0, bytes = 0;
	char bad[256] = "";
	while (ended < want) {
		struct piece p = recv_piece(fd, buf + have, MAX_MSG - have);
		if (p.len < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				wait_fd(fd, POLLIN, deadline, "receive");
				continue;
			}
			fail("recvmsg: %s", strerror(errno));
		}
		if (p.flags & MSG_NOTIFICATION) {
			union sctp_notification *n = (void *)(buf + have);
			if (n->sn_header.sn_type == SCTP_ASSOC_CHANGE) {
				struct sctp_assoc_change *ac = &n->sn_assoc_change;
				printf("ksctp server: assoc %d %s (out %u, in %u streams, error %u)\n", ac->sac_assoc_id,
				       state_name(ac->sac_state), ac->sac_outbound_streams, ac->sac_inbound_streams,
				       ac->sac_error);
				if (ac->sac_state == SCTP_COMM_LOST || ac->sac_state == SCTP_SHUTDOWN_COMP ||
				    ac->sac_state == SCTP_CANT_STR_ASSOC) {
					ended++;
					if (ac->sac_state == SCTP_SHUTDOWN_COMP)
						graceful++;
					else
						snprintf(bad, sizeof bad, "association %d ended with %s", ac->sac_assoc_id,
							 state_name(ac->sac_state));
				}
			} else if (n->sn_header.sn_type == SCTP_SHUTDOWN_EVENT) {
				printf("ksctp server: assoc %d peer sent SHUTDOWN\n", n->sn_shutdown_event.sse_assoc_id);
			} else {
				printf("ksctp server: notification type 0x%x\n", n->sn_header.sn_type);
			}
			fflush(stdout);
			continue;
		}
		if (have == 0) {
			if (!p.have_info)
				fail("message without SCTP_RCVINFO");
			first = p.info;
		}
		have += p.len;
		if (!(p.flags & MSG_EOR)) {
			if (have == MAX_MSG)
				fail("message larger than %d bytes", MAX_MSG);
			continue;
		}
		if (!discard)
			send_message(fd, buf, have, first.rcv_sid, first.rcv_flags & SCTP_UNORDERED, first.rcv_ppid,
				     first.rcv_assoc_id, deadline);
		echoed++;
		bytes += have;
		have = 0;
	}
	if (graceful == want) {
		printf("ksctp server ok: %d associations shut down gracefully, %ld messages (%ld bytes) %s\n",
		       want, echoed, bytes, discard ? "received" : "echoed");
		return 0;
	}
	fail("%s (%d of %d graceful, %ld messages echoed)", bad, graceful, want, echoed);
	return 1;
}

/* ---- client ---- */

/* Receives one whole message (notifications in between are handled); returns its length. */
static size_t recv_message(int fd, unsigned char *buf, size_t cap, struct sctp_rcvinfo *info, double deadline)
{
	size_t have = 0;
	for (;;) {
		struct piece p = recv_piece(fd, buf + have, cap - have);
		if (p.len < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				wait_fd(fd, POLLIN, deadline, "receive an echo");
				continue;
			}
			fail("recvmsg: %s", strerror(errno));
		}
		if (p.len == 0 && !(p.flags & MSG_NOTIFICATION))
			fail("association closed while waiting for an echo");
		if (p.flags & MSG_NOTIFICATION) {
			union sctp_notification *n = (void *)(buf + have);
			if (n->sn_header.sn_type == SCTP_ASSOC_CHANGE) {
				int st = n->sn_assoc_change.sac_state;
				printf("ksctp client: assoc %s\n", state_name(st));
				if (st != SCTP_COMM_UP)
					fail("association ended (%s) while waiting for an echo", state_name(st));
			} else {
				fail("unexpected notification type 0x%x while waiting for an echo",
				     n->sn_header.sn_type);
			}
			continue;
		}
		if (have == 0) {
			if (!p.have_info)
				fail("echo without SCTP_RCVINFO");
			*info = p.info;
		}
		have += p.len;
		if (p.flags & MSG_EOR)
			return have;
		if (have == cap)
			fail("echo longer than %zu bytes", cap);
	}
}

static void check_echo(const unsigned char *in, size_t n, const struct sctp_rcvinfo *ri, uint32_t k, long size,
		       int streams, int unordered, unsigned char *want)
{
	fill_message(want, size, k);
	if (n != (size_t)size)
		fail("echo of message %u has %zu bytes, sent %ld", k, n, size);
	if (memcmp(in, want, size)) {
		size_t j = 0;
		while (in[j] == want[j])
			j++;
		fail("echo of message %u differs at byte %zu", k, j);
	}
	if (ri->rcv_sid != k % streams)
		fail("echo of message %u came on stream %u, sent on %u", k, ri->rcv_sid, k % streams);
	if (ri->rcv_ppid != htonl(k))
		fail("echo of message %u has PPID %u, sent %u", k, ntohl(ri->rcv_ppid), k);
	if (!!(ri->rcv_flags & SCTP_UNORDERED) != unordered)
		fail("echo of message %u: unordered flag %d, sent %d", k, !!(ri->rcv_flags & SCTP_UNORDERED), unordered);
}

/* Whether the association of a one-to-one socket is gone (SCTP_STATUS has nothing to report). */
static int assoc_gone(int fd)
{
	struct sctp_status ss = { 0 };
	socklen_t sl = sizeof ss;
	return getsockopt(fd, IPPROTO_SCTP, SCTP_STATUS, &ss, &sl) < 0 || ss.sstat_state == SCTP_CLOSED;
}

/* After shutdown(SHUT_WR) (ours) or the peer's SHUTDOWN: waits for the association to close gracefully. */
static const char *wait_closed(int fd, unsigned char *in, double deadline, int peer_initiated)
{
	int saw_shutdown_event = 0;
	for (;;) {
		struct piece p = recv_piece(fd, in, MAX_MSG);
		if (p.len < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				wait_fd(fd, POLLIN, deadline, "see SHUTDOWN_COMP");
				continue;
			}
			fail("recvmsg while shutting down: %s", strerror(errno));
		}
		if (!(p.flags & MSG_NOTIFICATION)) {
			if (p.len > 0)
				fail("data after all echoes arrived");
			/* End of stream: the peer's SHUTDOWN arrived. The SHUTDOWN_COMP notification (queued when the
			 * association closes) may still be on its way; the socket stays readable, so poll slowly. */
			if (!peer_initiated && !saw_shutdown_event)
				fail("end of stream without SHUTDOWN_COMP notification");
			if (now_s() > deadline)
				fail("timed out waiting for SHUTDOWN_COMP after end of stream");
			if (assoc_gone(fd))
				return "end of stream, association closed";
			usleep(10000);
			continue;
		}
		union sctp_notification *n = (void *)in;
		if (n->sn_header.sn_type == SCTP_SHUTDOWN_EVENT) {
			if (!peer_initiated)
				fail("got SHUTDOWN_EVENT during our own shutdown");
			saw_shutdown_event = 1;
			printf("ksctp client: peer sent SHUTDOWN\n");
		} else if (n->sn_header.sn_type == SCTP_ASSOC_CHANGE) {
			int st = n->sn_assoc_change.sac_state;
			if (st != SCTP_SHUTDOWN_COMP)
				fail("association ended with %s instead of SHUTDOWN_COMP", state_name(st));
			if (peer_initiated && !saw_shutdown_event)
				fail("SHUTDOWN_COMP without a SHUTDOWN_EVENT first");
			return "SHUTDOWN_COMP";
		} else {
			fail("unexpected notification type 0x%x while shutting down", n->sn_header.sn_type);
		}
	}
}

static int client(int argc, char **argv)
{
	role = "ksctp client";
	if (argc < 2)
		fail("usage: ksctp client ADDR PORT [--count N] [--size BYTES] [--streams K] [--unordered] "
		     "[--window W] [--encap-port UDPPORT] [--hb-interval MS] [--idle SECS] [--expect-peer-shutdown] "
		     "[--timeout SECS]");
	const char *addr = argv[0];
	int port = atoi(argv[1]);
	long count = 10, size = 100;
	int streams = 1, unordered = 0, window = 4, encap = 0, timeout = 60, hb = 0, idle = 0, peer_shutdown = 0;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--count") && i + 1 < argc)
			count = atol(argv[++i]);
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = atol(argv[++i]);
		else if (!strcmp(argv[i], "--streams") && i + 1 < argc)
			streams = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--window") && i + 1 < argc)
			window = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--encap-port") && i + 1 < argc)
			encap = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--hb-interval") && i + 1 < argc)
			hb = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--idle") && i + 1 < argc)
			idle = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--unordered"))
			unordered = 1;
		else if (!strcmp(argv[i], "--expect-peer-shutdown"))
			peer_shutdown = 1;
		else
			fail("unknown argument %s", argv[i]);
	}
	if (size < 1 || size > MAX_MSG || count < 1 || streams < 1 || window < 1)
		fail("bad --count, --size, --streams or --window");
	double start = now_s(), deadline = start + timeout;

	struct sockaddr_storage ss_addr;
	memset(&ss_addr, 0, sizeof ss_addr);
	socklen_t alen;
	struct sockaddr_in *sa = (struct sockaddr_in *)&ss_addr;
	struct sockaddr_in6 *sa6 = (struct sockaddr_in6 *)&ss_addr;
	if (inet_pton(AF_INET, addr, &sa->sin_addr) == 1) {
		sa->sin_family = AF_INET;
		sa->sin_port = htons(port);
		alen = sizeof *sa;
	} else if (inet_pton(AF_INET6, addr, &sa6->sin6_addr) == 1) {
		sa6->sin6_family = AF_INET6;
		sa6->sin6_port = htons(port);
		alen = sizeof *sa6;
	} else {
		fail("bad address %s", addr);
	}
	int family = ss_addr.ss_family;
	int fd = socket(family, SOCK_STREAM, IPPROTO_SCTP);
	if (fd < 0)
		fail("socket(%s, SOCK_STREAM, IPPROTO_SCTP): %s", family == AF_INET6 ? "AF_INET6" : "AF_INET",
		     strerror(errno));
	common_opts(fd, streams);
	if (encap) {
		struct sctp_udpencaps ue;
		memset(&ue, 0, sizeof ue);
		ue.sue_assoc_id = SCTP_FUTURE_ASSOC;
		ue.sue_address.ss_family = family; /* the wildcard address: every peer */
		ue.sue_port = htons(encap);
		setopt(fd, IPPROTO_SCTP, SCTP_REMOTE_UDP_ENCAPS_PORT, &ue, sizeof ue, "SCTP_REMOTE_UDP_ENCAPS_PORT");
	}
	if (hb) {
		struct sctp_paddrparams pp;
		memset(&pp, 0, sizeof pp);
		pp.spp_assoc_id = SCTP_FUTURE_ASSOC;
		pp.spp_address.ss_family = family;
		pp.spp_hbinterval = hb;
		/* One unanswered heartbeat too many and the path goes inactive: the path state after --idle tells
		 * whether the peer answered every HEARTBEAT. */
		pp.spp_pathmaxrxt = 1;
		pp.spp_flags = SPP_HB_ENABLE;
		setopt(fd, IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, &pp, sizeof pp, "SCTP_PEER_ADDR_PARAMS");
		/* A short RTO (the default minimum is 1 s) so heartbeats go out every hb + RTO. */
		struct sctp_rtoinfo ri = { .srto_assoc_id = SCTP_FUTURE_ASSOC, .srto_initial = 300, .srto_max = 1000,
					   .srto_min = 100 };
		setopt(fd, IPPROTO_SCTP, SCTP_RTOINFO, &ri, sizeof ri, "SCTP_RTOINFO");
	}
	struct timeval tv = { .tv_sec = timeout };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds the blocking connect() */
	if (connect(fd, (struct sockaddr *)&ss_addr, alen) < 0)
		fail("connect to %s port %d: %s", addr, port, strerror(errno));
	struct sctp_status ss = { 0 };
	socklen_t sl = sizeof ss;
	if (getsockopt(fd, IPPROTO_SCTP, SCTP_STATUS, &ss, &sl) < 0)
		fail("getsockopt SCTP_STATUS: %s", strerror(errno));
	printf("ksctp client: connected to %s port %d (out %u, in %u streams, fragmentation point %u, peer rwnd %u)\n",
	       addr, port, ss.sstat_outstrms, ss.sstat_instrms, ss.sstat_fragmentation_point, ss.sstat_rwnd);
	fflush(stdout);
	if (ss.sstat_outstrms < streams)
		fail("peer granted %u outbound streams, %d asked", ss.sstat_outstrms, streams);

	unsigned char *out = malloc(size), *want = malloc(size), *in = malloc(MAX_MSG);
	/* Unordered echoes may come back in any order; each carries its index in its first four bytes. */
	char *seen = calloc(count, 1);
	long sent = 0, echoed = 0;
	while (echoed < count) {
		while (sent < count && sent - echoed < window) {
			fill_message(out, size, sent);
			send_message(fd, out, size, sent % streams, unordered ? SCTP_UNORDERED : 0, htonl(sent), 0,
				     deadline);
			sent++;
		}
		struct sctp_rcvinfo ri;
		size_t n = recv_message(fd, in, MAX_MSG, &ri, deadline);
		uint32_t k = echoed;
		if (unordered && size >= 4) {
			uint32_t be;
			memcpy(&be, in, 4);
			k = ntohl(be);
		}
		if (k >= count || seen[k])
			fail("echo %ld: unexpected message index %u", echoed, k);
		check_echo(in, n, &ri, k, size, streams, unordered, want);
		seen[k] = 1;
		echoed++;
	}
	if (idle) {
		/* Idle: only heartbeats flow. Then the association must still carry data. */
		printf("ksctp client: idle for %d s\n", idle);
		fflush(stdout);
		double until = now_s() + idle;
		while (now_s() < until) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int r = poll(&p, 1, (int)((until - now_s()) * 1000) + 1);
			if (r > 0) {
				struct piece pc = recv_piece(fd, in, MAX_MSG);
				if (pc.len >= 0 && (pc.flags & MSG_NOTIFICATION))
					fail("notification type 0x%x while idle", ((union sctp_notification *)in)->sn_header.sn_type);
				if (pc.len >= 0)
					fail("unexpected data (%zd bytes) while idle", pc.len);
			}
		}
		struct sctp_paddrinfo pi;
		memset(&pi, 0, sizeof pi);
		socklen_t pl = sizeof pi;
		memcpy(&pi.spinfo_address, &ss_addr, alen);
		if (getsockopt(fd, IPPROTO_SCTP, SCTP_GET_PEER_ADDR_INFO, &pi, &pl) < 0)
			fail("getsockopt SCTP_GET_PEER_ADDR_INFO: %s", strerror(errno));
		printf("ksctp client: after idle: path state %d, srtt %u ms, rto %u ms\n", pi.spinfo_state,
		       pi.spinfo_srtt, pi.spinfo_rto);
		if (hb && pi.spinfo_state != SCTP_ACTIVE)
			fail("path state %d after idling, not ACTIVE: the peer left heartbeats unanswered",
			     pi.spinfo_state);
		fill_message(out, size, count);
		send_message(fd, out, size, count % streams, unordered ? SCTP_UNORDERED : 0, htonl(count), 0, deadline);
		struct sctp_rcvinfo ri;
		size_t n = recv_message(fd, in, MAX_MSG, &ri, deadline);
		check_echo(in, n, &ri, count, size, streams, unordered, want);
	}
	const char *how;
	if (peer_shutdown) {
		printf("ksctp client: waiting for the peer's SHUTDOWN\n");
		fflush(stdout);
		how = wait_closed(fd, in, deadline, 1);
	} else {
		/* Graceful close: SHUTDOWN, then wait for the association to report SHUTDOWN_COMP. */
		if (shutdown(fd, SHUT_WR) < 0)
			fail("shutdown(SHUT_WR): %s", strerror(errno));
		how = wait_closed(fd, in, deadline, 0);
	}
	close(fd);
	printf("ksctp client ok: %ld messages of %ld bytes on %d stream(s)%s echoed and verified%s, %s shutdown (%s) "
	       "(%.2f s)\n",
	       count, size, streams, unordered ? " unordered" : "", idle ? ", one more after idling" : "",
	       peer_shutdown ? "peer" : "our", how, now_s() - start);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "server"))
		return server(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(argc - 2, argv + 2);
	fprintf(stderr, "usage: ksctp server PORT [...] | ksctp client ADDR PORT [...]\n");
	return 2;
}
