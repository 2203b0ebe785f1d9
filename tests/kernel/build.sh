#!/usr/bin/env bash
# Prepares the Linux-kernel-SCTP interop VM for tests/interop_kernel.rs:
#
#   tests/kernel/build.sh [--check] OUTDIR
#
# writes OUTDIR/vmlinuz, OUTDIR/initramfs.gz and OUTDIR/kernel-release. Idempotent and cached under OUTDIR: the
# Debian kernel package is downloaded and unpacked once per version, cargo and gcc rebuild only what changed,
# and the initramfs is repacked only when one of its files changed.
#
# The kernel is Debian's cloud kernel (the version linux-image-cloud-amd64 points at): small, made for VMs, SCTP
# as a module (>= 5.11, so SCTP over UDP). It is fetched with `apt-get download` and unpacked with `dpkg-deb -x`
# into OUTDIR, never installed. The initramfs holds busybox (busybox-static), the SCTP modules and their
# dependencies, a static sctp_echo (our example), a static ksctp (tests/kernel/ksctp.c: kernel SCTP echo
# server and client) and tests/kernel/init.sh as /init.
#
# Needs (Debian packages): busybox-static cpio gcc libc6-dev xz-utils (and apt, dpkg, cargo, gzip, as on any
# Debian with Rust), and apt package lists (apt-get update) or a kernel unpacked by an earlier run. Running the
# VM needs qemu-system-x86 as well. A missing one stops it with exit status 3 and the line
# `build.sh: needs WHAT (install: apt-get install PACKAGE)` (or `(run: ...)`) on stderr; with --check it stops
# after those checks, before downloading or building anything, so the test can skip (or, in CI, fail) on
# exactly that line. Environment:
#   KERNEL_PACKAGE            a versioned kernel image package to use instead (e.g. linux-image-6.1.0-56-amd64)
#   KERNEL_CARGO_TARGET_DIR   cargo target directory for the static sctp_echo (default OUTDIR/cargo)
#   CARGO                     cargo to run (default: cargo)
set -euo pipefail

die() {
	echo "build.sh: $*" >&2
	exit 1
}
check_only=false
if [ "${1:-}" = --check ]; then
	check_only=true
	shift
fi
[ $# -eq 1 ] || die "usage: $0 [--check] OUTDIR"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
cargo=${CARGO:-cargo}
target_triple=x86_64-unknown-linux-gnu

missing() { # missing WHAT HOW: a prerequisite is not there (exit status 3, which the test reads)
	echo "build.sh: needs $1 ($2)" >&2
	exit 3
}
need() { # need COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || missing "$1" "install: apt-get install $2"
}
need cpio cpio
need gzip gzip
need gcc gcc
need dpkg-deb dpkg
need apt-get apt
# Debian compresses kernel modules with xz (trixie and later); build.sh unpacks them for the initramfs.
need xz xz-utils
# gcc -static links against libc.a; gcc prints the bare name when it has none.
[ "$(gcc -print-file-name=libc.a)" != libc.a ] || missing "libc.a for gcc -static" "install: apt-get install libc6-dev"
[ -x /bin/busybox ] || missing /bin/busybox "install: apt-get install busybox-static"
# The dynamically linked busybox (package busybox) would not run in the VM, which has no libc.
if command -v readelf >/dev/null 2>&1 && readelf -l /bin/busybox | grep -q 'Requesting program interpreter'; then
	missing "a static /bin/busybox" "install: apt-get install busybox-static"
fi

# ---- 1. The kernel: vmlinuz and the SCTP modules -------------------------------------------------------------
pkg=${KERNEL_PACKAGE:-}
if [ -z "$pkg" ]; then
	# The versioned package the metapackage depends on, e.g. linux-image-6.1.0-56-cloud-amd64.
	pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1 || true)
fi
if [ -z "$pkg" ]; then
	# No package lists (apt-get update not run, or offline): use a kernel unpacked earlier, if any.
	cached=$(ls -d "$out"/kernel/linux-image-*/.done 2>/dev/null | sort -V | tail -n 1 || true)
	# The kernel package is fetched with apt-get download, which needs the package lists.
	[ -n "$cached" ] || missing "apt package lists that know linux-image-cloud-amd64" "run: apt-get update"
	pkg=$(basename "$(dirname "$cached")")
	echo "build.sh: apt lists unavailable, using cached $pkg" >&2
fi
if $check_only; then
	echo "build.sh: everything needed is here (kernel package $pkg)" >&2
	exit 0
fi
kdir=$out/kernel/$pkg
if [ ! -e "$kdir/.done" ]; then
	echo "build.sh: fetching $pkg" >&2
	rm -rf "$kdir" "$kdir.tmp"
	mkdir -p "$kdir.tmp/deb"
	(cd "$kdir.tmp/deb" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2) ||
		die "apt-get download $pkg failed (run apt-get update?)"
	dpkg-deb -x "$kdir.tmp/deb"/*.deb "$kdir.tmp/root"
	rm -rf "$kdir.tmp/deb"
	touch "$kdir.tmp/.done"
	mv "$kdir.tmp" "$kdir"
fi
vmlinuz=$(ls "$kdir"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$vmlinuz" ] || die "$pkg has no /boot/vmlinuz-*"
krel=${vmlinuz##*/vmlinuz-}
moddir=$kdir/root/lib/modules/$krel
[ -d "$moddir" ] || die "$pkg has no lib/modules/$krel"

# Finds the file of module NAME (module names use _ where files may use -), or of the crypto module that
# provides NAME as an alias (soft dependencies name algorithms: "crc32c" is crc32c_generic.ko). Prints nothing
# if there is none (the module is built in).
find_module() {
	local n=$1 f
	f=$(find "$moddir/kernel" \( -name "$n.ko*" -o -name "${n//_/-}.ko*" \) | head -n 1)
	if [ -z "$f" ] && [ -d "$moddir/kernel/crypto" ]; then
		f=$(grep -l -a -z -x -F "alias=$n" -r "$moddir/kernel/crypto" 2>/dev/null | head -n 1 || true)
	fi
	echo "$f"
}
# Module file contents, decompressed.
module_text() {
	case "$1" in
	*.xz) xz -dc "$1" ;;
	*.zst) zstd -dc "$1" ;;
	*.gz) gzip -dc "$1" ;;
	*) cat "$1" ;;
	esac
}
# The modules file $1 needs loaded first: its depends= field and the pre: part of its softdep= field (both in
# the NUL-separated .modinfo strings).
module_deps() {
	module_text "$1" | tr '\0' '\n' | sed -n -e 's/^depends=//p' -e 's/^softdep=.*pre: *\([^:]*\)\( post:.*\)\{0,1\}$/\1/p' |
		tr ', ' '\n\n' | sed '/^$/d' | sort -u
}
declare -A seen=()
order=()
add_module() { # dependencies first
	local n=$1 d f
	[ -z "${seen[$n]:-}" ] || return 0
	seen[$n]=1
	f=$(find_module "$n")
	if [ -z "$f" ]; then
		# Built in, or (for the module asked for) missing.
		[ "$n" != sctp ] || die "$pkg has no sctp module"
		return 0
	fi
	for d in $(module_deps "$f"); do
		add_module "$d"
	done
	case " ${order[*]:-} " in
	*" $f "*) ;;
	*) order+=("$f") ;;
	esac
}
add_module sctp

# ---- 2. Programs: a static sctp_echo and ksctp --------------------------------------------------------------
echo "build.sh: building static sctp_echo" >&2
ctd=${KERNEL_CARGO_TARGET_DIR:-$out/cargo}
# --target keeps the static flag away from build scripts and proc macros (they stay dynamic host programs).
(cd "$repo" && unset CARGO_ENCODED_RUSTFLAGS &&
	RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" CARGO_TARGET_DIR="$ctd" \
		"$cargo" build -q --release --example sctp_echo --target "$target_triple") ||
	die "cargo build of the static sctp_echo failed"
echo_bin=$ctd/$target_triple/release/examples/sctp_echo
[ -x "$echo_bin" ] || die "$echo_bin not built"

mkdir -p "$out/bin"
if [ ! -x "$out/bin/ksctp" ] || [ "$here/ksctp.c" -nt "$out/bin/ksctp" ]; then
	gcc -static -O2 -Wall -o "$out/bin/ksctp.tmp" "$here/ksctp.c" ||
		die "gcc -static ksctp.c failed (needs gcc and libc6-dev)"
	mv "$out/bin/ksctp.tmp" "$out/bin/ksctp"
fi

# ---- 3. The initramfs ---------------------------------------------------------------------------------------
stage=$out/initramfs.stage
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,lib/modules}
cp /bin/busybox "$stage/bin/busybox"
for a in $("$stage/bin/busybox" --list); do
	[ "$a" = busybox ] || ln -s busybox "$stage/bin/$a"
done
# Debug info is not needed in the VM, and a smaller initramfs boots faster.
if command -v strip >/dev/null 2>&1; then
	strip -o "$stage/bin/sctp_echo" "$echo_bin"
else
	cp "$echo_bin" "$stage/bin/sctp_echo"
fi
cp "$out/bin/ksctp" "$stage/bin/ksctp"
: >"$stage/lib/modules/order"
for f in "${order[@]}"; do
	b=$(basename "$f")
	case "$b" in
	*.xz) xz -dc "$f" >"$stage/lib/modules/${b%.xz}"; b=${b%.xz} ;;
	*.zst) zstd -dc "$f" >"$stage/lib/modules/${b%.zst}"; b=${b%.zst} ;;
	*.gz) gzip -dc "$f" >"$stage/lib/modules/${b%.gz}"; b=${b%.gz} ;;
	*) cp "$f" "$stage/lib/modules/$b" ;;
	esac
	echo "$b" >>"$stage/lib/modules/order"
done
cp "$here/init.sh" "$stage/init"
chmod 755 "$stage/init"

# Repack only if the contents changed (the checksum of every file and link name).
sum=$(cd "$stage" && find . -print0 | LC_ALL=C sort -z | xargs -0 sh -c 'for f; do if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; elif [ -f "$f" ]; then echo "$f $(cksum <"$f")"; else echo "$f/"; fi; done' sh | cksum)
if [ ! -s "$out/initramfs.gz" ] || [ "$(cat "$out/initramfs.sum" 2>/dev/null)" != "$sum" ]; then
	(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner 0:0 --quiet) |
		gzip -1 >"$out/initramfs.gz.tmp"
	mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
	echo "$sum" >"$out/initramfs.sum"
fi
cp "$vmlinuz" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$krel" >"$out/kernel-release"
echo "build.sh: ready: $out/vmlinuz ($krel, $pkg), $out/initramfs.gz ($(du -k "$out/initramfs.gz" | cut -f1) KiB; modules: $(tr '\n' ' ' <"$stage/lib/modules/order"))" >&2
