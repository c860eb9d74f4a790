#!/usr/bin/env bash
# Make sure the system tools that bmap's tests compare against are installed.
# As root, missing Debian packages are installed with apt-get; otherwise this says what to
# install and fails. Each entry is COMMAND:PACKAGE.
set -euo pipefail

tools=(
    sfdisk:fdisk
    sgdisk:gdisk
    mke2fs:e2fsprogs
    debugfs:e2fsprogs
    dumpe2fs:e2fsprogs
    blkid:util-linux
    losetup:mount
    mkfs.vfat:dosfstools
    mkswap:util-linux
    xz:xz-utils
    mkfs.ntfs:ntfs-3g
    isoinfo:genisoimage
    mkfs.exfat:exfatprogs
    mkfs.xfs:xfsprogs
    mkfs.btrfs:btrfs-progs
    cryptsetup:cryptsetup-bin
    pvcreate:lvm2
    xorriso:xorriso
    nbdkit:nbdkit
    qemu-io:qemu-utils
    qemu-img:qemu-utils
    nbdinfo:libnbd-bin
    nbdfuse:libnbd-bin
    fusermount3:fuse3
    thin_dump:thin-provisioning-tools
    qemu-nbd:qemu-utils
    ewfacquire:ewf-tools
    ewfexport:ewf-tools
    ewfinfo:ewf-tools
    qemu-system-x86_64:qemu-system-x86
    extlinux:extlinux
    chromium:chromium
    mcopy:mtools
    fls:sleuthkit
    istat:sleuthkit
    makefs:makefs
    mount.exfat-fuse:exfat-fuse
    grub-mkstandalone:grub-common
    bmaptool:bmap-tools
)
# The UEFI boot test's firmware and GRUB's EFI modules are no commands.
if [ ! -f /usr/share/OVMF/OVMF_CODE_4M.fd ]; then
    tools+=("ovmf-missing:ovmf")
fi
if [ ! -d /usr/lib/grub/x86_64-efi ]; then
    tools+=("grub-efi-modules-missing:grub-efi-amd64-bin")
fi
# The boot trace test's BIOS files (mbr.bin, the .c32 modules) are no command: syslinux-common,
# only a Recommends of extlinux, so not brought by --no-install-recommends.
if [ ! -f /usr/lib/syslinux/mbr/mbr.bin ] || [ ! -f /usr/lib/syslinux/modules/bios/poweroff.c32 ]; then
    tools+=("syslinux-common-missing:syslinux-common")
fi
# A venv needs python3-venv on Debian's own Python; pyenv and other builds carry it.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    tools+=("python3-venv-missing:python3-venv")
fi
# libnbd's Python binding (NBD URIs as input) is no command and not on PyPI: Debian's module,
# linked into the venv by the Makefile.
if ! ls /usr/lib/python3/dist-packages/libnbdmod.*.so >/dev/null 2>&1; then
    tools+=("python3-libnbd-missing:python3-libnbd")
fi

missing=()
for entry in "${tools[@]}"; do
    cmd=${entry%%:*}
    pkg=${entry##*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/sbin/$cmd" ] && [ ! -x "/usr/sbin/$cmd" ]; then
        case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
    fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "ensure-tools: missing system packages: ${missing[*]}" >&2
    echo "ensure-tools: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
