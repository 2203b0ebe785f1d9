#!/usr/bin/env bash
# Boots the Linux-kernel-SCTP interop VM by hand (tests/interop_kernel.rs does the same, with a deadline):
#
#   tests/kernel/build.sh OUTDIR && tests/kernel/run.sh OUTDIR [KERNEL-CMDLINE-WORDS...]
#
# e.g. `tests/kernel/run.sh target/kernel-interop multiproto_log=debug interop_only=B` (see init.sh for the
# words it reads). The console goes to stdout; the VM powers itself off when done. Uses TCG (software
# emulation) unless KVM=1 is set: nested KVM is broken on some hosts that still offer /dev/kvm.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [KERNEL-CMDLINE-WORDS...]" >&2; exit 2; }
out=$1
shift
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 not found: apt-get install qemu-system-x86" >&2; exit 1; }
if [ "${KVM:-0}" = 1 ]; then
	accel=(-accel kvm -cpu host)
else
	accel=(-accel tcg -cpu max)
fi
exec qemu-system-x86_64 "${accel[@]}" -smp 2 -m 512M -nodefaults -no-user-config -display none \
	-serial stdio -no-reboot -kernel "$out/vmlinuz" -initrd "$out/initramfs.gz" \
	-append "console=ttyS0 panic=-1 quiet $*" </dev/null
