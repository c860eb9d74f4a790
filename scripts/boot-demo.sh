#!/usr/bin/env bash
# Build a small disk that boots (MBR, ext4, extlinux, poweroff.c32), convert it to qcow2, and
# trace its boot live with `bmap serve --run qemu-system-x86_64 ...`. Needs root (a loop mount
# for extlinux --install) and the tools of scripts/ensure-tools.sh.
# Usage: sudo scripts/boot-demo.sh [KEEP_DIR]   (the disk is kept in KEEP_DIR when given)
set -euo pipefail

BMAP=${BMAP:-$(dirname "$0")/../.venv/bin/bmap}
BIOS=/usr/lib/syslinux/modules/bios
work=$(mktemp -d "${TMPDIR:-/tmp}/bmap-boot-demo-XXXXXX")
dev= mnt=
cleanup() {
    if [ -n "$mnt" ] && mountpoint -q "$mnt"; then umount "$mnt"; fi
    if [ -n "$dev" ]; then losetup --detach "$dev" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

disk=$work/boot.img
truncate -s 64M "$disk"
echo 'start=2048, type=83, bootable' | sfdisk -q "$disk"
mkdir -p "$work/tree/boot/extlinux" "$work/tree/etc"
cp "$BIOS/poweroff.c32" "$BIOS/libcom32.c32" "$work/tree/boot/extlinux/"
printf 'SERIAL 0 115200\nDEFAULT off\nPROMPT 0\nTIMEOUT 0\nLABEL off\n  COM32 poweroff.c32\n' \
    >"$work/tree/boot/extlinux/extlinux.conf"
echo bootdemo >"$work/tree/etc/hostname"
# extlinux 6.04 reads no 64bit ext4.
mke2fs -q -F -t ext4 -O ^64bit -E offset=1048576 -d "$work/tree" "$disk" 64512k
dev=$(losetup --find --show --offset 1048576 --sizelimit $((129024 * 512)) "$disk")
mnt=$work/mnt
mkdir "$mnt"
mount "$dev" "$mnt"
extlinux --install "$mnt/boot/extlinux" 2>/dev/null
umount "$mnt"
losetup --detach "$dev"
dev=
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$disk" "$work/boot.qcow2"

# snapshot=on: an IDE disk must be writable, the served one is not (qemu keeps its own
# overlay). The guest powers off from poweroff.c32; the timeout caps a guest that does not.
"$BMAP" serve "$work/boot.qcow2" --run "timeout 60 qemu-system-x86_64 -nodefaults \
-display none -m 64 -accel tcg -drive file=\$uri,format=raw,if=ide,snapshot=on -no-reboot"

if [ $# -gt 0 ]; then
    mkdir -p "$1"
    cp "$disk" "$work/boot.qcow2" "$1/"
    echo "boot-demo: kept boot.img and boot.qcow2 in $1" >&2
fi
