#!/usr/bin/env bash
# make-samples.sh: build the small disk images in samples/ with real tools.
#
# Usage:  sudo bash samples/make-samples.sh
#
# Writes, next to this script:
#   <name>.img.xz     each image, xz -9e (the uncompressed image is never kept here)
#   MANIFEST.json     one object per image: size, sha256, sector size, exact commands, tool versions
#   truth/            what the real tools say about each image (sfdisk --json, sgdisk -p,
#                     blkid -p, dumpe2fs -h, debugfs stat); never produced by bmap itself
#
# Every UUID, GUID, serial, label id and timestamp is fixed, so a rerun with the same tool
# versions gives byte-identical images. Runs as root (losetup for the 4096-byte-sector image).
# All work happens in a mktemp dir; loop devices and the temp dir are removed on exit.
# The previous outputs are replaced only after every image and truth file was built.
set -euo pipefail

export LC_ALL=C.UTF-8 TZ=UTC
umask 022

SAMPLES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FAKE_TIME=1700000000          # 2023-11-14T22:13:20Z, for mke2fs, debugfs and the file tree

die() { printf 'make-samples: %s\n' "$*" >&2; exit 1; }

[[ ${EUID} -eq 0 ]] || die "must run as root (losetup --sector-size 4096); try: sudo bash $0"
for tool in sfdisk sgdisk mke2fs debugfs dumpe2fs mkfs.vfat mkswap blkid losetup xz python3 sha256sum; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bmap-samples.XXXXXX")
LOOPS=()
cleanup() {
    local loop
    for loop in "${LOOPS[@]}"; do
        losetup -d "$loop" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

OUT="$WORK/out"                # becomes samples/ contents at the very end
TRUTH="$OUT/truth"
LOGS="$WORK/logs"              # per-image command logs (NUL-separated records)
mkdir -p "$TRUTH" "$LOGS"
cd "$WORK"                     # every command below uses paths relative to $WORK

# ---------------------------------------------------------------------------------------------
# Command logging: run IMAGE CMD... runs CMD and records it, shell-quoted, in made_with.
# ---------------------------------------------------------------------------------------------

CUR_LOOP=""                    # the loop device currently attached; logged as "$LOOP"

quote_args() {
    local arg out=() q="'"
    for arg in "$@"; do
        if [[ -n $CUR_LOOP && $arg == "$CUR_LOOP" ]]; then
            out+=('"$LOOP"')
        elif [[ $arg =~ ^[A-Za-z0-9_./:=+,@%-]+$ ]]; then
            out+=("$arg")
        else
            out+=("'${arg//$q/$q\\$q$q}'")
        fi
    done
    printf '%s' "${out[*]}"
}

log_cmd() {                    # log_cmd IMAGE TEXT
    printf '%s\0' "$2" >>"$LOGS/$1.cmds"
}

run() {                        # run IMAGE CMD...
    local image=$1; shift
    log_cmd "$image" "$(quote_args "$@")"
    if ! "$@" >>"$WORK/tools.log" 2>&1; then
        tail -n 20 "$WORK/tools.log" >&2
        die "command failed for $image: $(quote_args "$@")"
    fi
}

run_stdin() {                  # run_stdin IMAGE INPUT CMD...   (INPUT fed on stdin, logged as a heredoc)
    local image=$1 input=$2; shift 2
    log_cmd "$image" "$(quote_args "$@") <<'EOF'"$'\n'"${input%$'\n'}"$'\nEOF'
    if ! "$@" <<<"${input%$'\n'}" >>"$WORK/tools.log" 2>&1; then
        tail -n 20 "$WORK/tools.log" >&2
        die "command failed for $image: $(quote_args "$@")"
    fi
}

copy_log() {                   # copy_log FROM TO: TO starts with FROM's commands
    cp "$LOGS/$1.cmds" "$LOGS/$2.cmds"
}

# manifest.tsv: name, sector size, description (the rest is computed at the end)
declare_image() {              # declare_image NAME SECTOR_SIZE DESCRIPTION
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/manifest.tsv"
}

# ---------------------------------------------------------------------------------------------
# The file tree for mke2fs -d. Every file says what it is and where it is, chunk by chunk,
# so a block found on disk can be named by its content; it also compresses well.
# ---------------------------------------------------------------------------------------------

MAKE_TREE_PY=$(cat <<'PY'
import os, sys
root = sys.argv[1]
def chunked(name, size, chunk=512):
    out = bytearray()
    for ofs in range(0, size, chunk):
        head = f"{name} offset 0x{ofs:08x} chunk {ofs // chunk:05d}\n".encode()
        body = (head + b"." * chunk)[: chunk - 1] + b"\n"
        out += body
    return bytes(out[:size])
def text(name, lines):
    return "".join(f"{name} line {i:04d}: the quick brown fox jumps over the lazy dog\n"
                   for i in range(lines)).encode()
files = {
    "README.txt": b"bmap sample tree, made by samples/make-samples.sh\n",
    "empty.txt": b"",
    "etc/hostname": b"bmap-sample\n",
    "etc/fstab": b"LABEL=root / ext4 defaults 0 1\nLABEL=swap0 none swap sw 0 0\n",
    "docs/notes.txt": text("docs/notes.txt", 40),          # 2.6 KiB
    "docs/lorem.txt": text("docs/lorem.txt", 100),         # 6.4 KiB
    "docs/deep/nested/leaf.txt": text("docs/deep/nested/leaf.txt", 20),
    "data/big.bin": chunked("data/big.bin", 200 * 1024),   # 200 KiB, exactly 204800 bytes
    "data/odd-size.bin": chunked("data/odd-size.bin", 5000),
}
for rel, content in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
os.symlink("data/big.bin", os.path.join(root, "link-to-big"))            # fast symlink (in the inode)
os.symlink("deep/nested/" + "./" * 30 + "leaf.txt",                     # slow symlink: 80 bytes, so
           os.path.join(root, "docs/long-link"))                          # the target is in a block
PY
)

make_tree() {                  # make_tree DIR
    rm -rf "$1"
    mkdir -p "$1"
    python3 -c "$MAKE_TREE_PY" "$1"
    find "$1" -type d -exec chmod 0755 {} +
    find "$1" -type f -exec chmod 0644 {} +
    find "$1" -depth -exec touch -h -d "@$FAKE_TIME" {} +
}

# ext2/ext4 with every knob fixed. mke2fs -d copies atime/ctime from the source tree (ctime
# cannot be set from user space, and mke2fs reading the files bumps atime), so all inode
# times are pinned with debugfs afterwards.
EXT4_FEATURES=none,sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr,has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
EXT2_FEATURES=none,sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr

make_ext() {                   # make_ext IMAGE FSFILE SIZE_MIB TYPE BLOCKSIZE UUID LABEL
    local image=$1 fsfile=$2 size=$3 fstype=$4 bs=$5 uuid=$6 label=$7 features
    [[ $fstype == ext4 ]] && features=$EXT4_FEATURES || features=$EXT2_FEATURES
    run "$image" rm -f "$fsfile"
    run "$image" truncate -s "${size}M" "$fsfile"
    run "$image" env E2FSPROGS_FAKE_TIME=$FAKE_TIME mke2fs -F -q -t "$fstype" -O "$features" \
        -b "$bs" -I 256 -U "$uuid" -E "hash_seed=$uuid,root_owner=0:0" -L "$label" -d tree "$fsfile"
    local cmds=() path field
    while IFS= read -r path; do
        path=${path#tree}; path=${path:-/}
        for field in atime ctime mtime crtime; do
            cmds+=("set_inode_field $path $field $FAKE_TIME")
        done
    done < <(find tree | LC_ALL=C sort; echo tree/lost+found)
    run_stdin "$image" "$(printf '%s\n' "${cmds[@]}")" \
        env E2FSPROGS_FAKE_TIME=$FAKE_TIME debugfs -w -f - "$fsfile"
}

place() {                      # place IMAGE FSFILE DISKFILE OFFSET_BYTES
    run "$1" dd if="$2" of="$3" bs=512 seek=$(($4 / 512)) conv=notrunc status=none
}

# ---------------------------------------------------------------------------------------------
# Truth: what the real tools say. Paths are relative, loop devices are written as /dev/loopX.
# capture OUTFILE ERRBASE CMD...: stdout to OUTFILE when the tool succeeds; on failure, the
# command, exit status, stderr (and any stdout) go to ERRBASE.err; warnings on success go to
# ERRBASE.stderr.
# ---------------------------------------------------------------------------------------------

normalise() { sed -E 's#/dev/loop[0-9]+#/dev/loopX#g'; }
# e2fsprogs tools print their version banner on stderr; it is in MANIFEST.json already.
drop_banner() { grep -Ev '^(debugfs|dumpe2fs) [0-9.]+ \([0-9A-Za-z-]+\)$' || true; }

capture() {
    local outfile=$1 errbase=$2; shift 2
    local rc=0
    "$@" >"$WORK/cap.out" 2>"$WORK/cap.raw" || rc=$?
    drop_banner <"$WORK/cap.raw" >"$WORK/cap.err"
    if [[ $rc -eq 0 ]]; then
        normalise <"$WORK/cap.out" >"$outfile"
        if [[ -s $WORK/cap.err ]]; then
            { printf '# %s\n# exit status: 0 (warnings on stderr)\n' "$(quote_args "$@")"
              normalise <"$WORK/cap.err"; } >"$errbase.stderr"
        fi
    else
        { printf '# %s\n# exit status: %d\n# stderr:\n' "$(quote_args "$@")" "$rc"
          normalise <"$WORK/cap.err"
          if [[ -s $WORK/cap.out ]]; then printf '# stdout:\n'; normalise <"$WORK/cap.out"; fi
        } >"$errbase.err"
    fi
}

# blkid_probe NAME FILE LABEL OFFSET SIZE|-: appends one block to truth/NAME.blkid.txt; failures
# (nothing found, probe past the end of the file) also go to truth/NAME.blkid.err.
blkid_probe() {
    local name=$1 file=$2 what=$3 offset=$4 size=$5 rc=0 args
    args=(blkid -p -o export)
    [[ $offset == 0 ]] || args+=(--offset "$offset")
    [[ $size == - ]] || args+=(--size "$size")
    args+=("$file")
    "${args[@]}" >"$WORK/cap.out" 2>"$WORK/cap.err" || rc=$?
    {   printf '# %s: %s\n# %s\n# exit status: %d\n' "$name" "$what" "$(quote_args "${args[@]}")" "$rc"
        normalise <"$WORK/cap.out"
        echo
    } >>"$TRUTH/$name.blkid.txt"
    if [[ $rc -ne 0 ]]; then
        {   printf '# %s: %s\n# %s\n# exit status: %d\n' "$name" "$what" "$(quote_args "${args[@]}")" "$rc"
            normalise <"$WORK/cap.err"
            echo
        } >>"$TRUTH/$name.blkid.err"
    fi
}

# ext_truth NAME FILE PARTLABEL OFFSET: dumpe2fs -h and a debugfs stat of every tree inode.
ext_truth() {
    local name=$1 file=$2 part=$3 offset=$4 dev cmds=() path
    dev="$file?offset=$offset"
    capture "$TRUTH/$name.$part.dumpe2fs.txt" "$TRUTH/$name.$part.dumpe2fs" dumpe2fs -h "$dev"
    while IFS= read -r path; do
        path=${path#tree}; cmds+=("stat ${path:-/}")
    done < <(find tree | LC_ALL=C sort)
    printf '%s\n' "${cmds[@]}" >debugfs.cmds
    capture "$TRUTH/$name.$part.debugfs.txt" "$TRUTH/$name.$part.debugfs" \
        debugfs -f debugfs.cmds "$dev"
}

sfdisk_truth() { capture "$TRUTH/$1.sfdisk.json" "$TRUTH/$1.sfdisk" sfdisk --json "${2:-$1.img}"; }
sgdisk_truth() { capture "$TRUTH/$1.sgdisk.txt" "$TRUTH/$1.sgdisk" sgdisk -p "${2:-$1.img}"; }

make_tree tree
( cd tree && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum ) >"$TRUTH/tree.sha256sum.txt"
( cd tree && find . -type l -printf '%p -> %l\n' | LC_ALL=C sort ) >"$TRUTH/tree.symlinks.txt"

# =============================================================================================
# 1. mbr-extended
# =============================================================================================
N=mbr-extended
log_cmd $N "make_tree tree   # shell function in samples/make-samples.sh (fixed content, mode, times)"
run $N rm -f $N.img
run $N truncate -s 32M $N.img
run_stdin $N "label: dos
label-id: 0x12ab34cd
unit: sectors

start=2048, size=12288, type=83, bootable
start=14336, size=8192, type=82
start=22528, size=16384, type=c
start=38912, size=24576, type=5
start=40960, size=4096, type=83
start=49152, size=8192, type=83
start=59392, size=2048, type=83
" sfdisk --no-reread --no-tell-kernel $N.img
make_ext $N p1.ext4 6 ext4 1024 0e4a0001-0001-4000-8000-0000000000e4 mbrroot
place $N p1.ext4 $N.img $((2048 * 512))
run $N rm -f p2.swap
run $N truncate -s 4M p2.swap
run $N mkswap -L swap0 -U 5a5a0002-0002-4000-8000-000000000082 p2.swap
place $N p2.swap $N.img $((14336 * 512))
run $N rm -f p3.fat
run $N truncate -s 8M p3.fat
run $N mkfs.vfat -F 16 -s 2 -h 22528 -n DEMOFAT --invariant -i 12345678 p3.fat
place $N p3.fat $N.img $((22528 * 512))
make_ext $N p6.ext2 4 ext2 1024 0e2a0006-0006-4000-8000-0000000000e2 logical6
place $N p6.ext2 $N.img $((49152 * 512))
declare_image $N 512 "32 MiB DOS/MBR disk: bootable ext4, swap, FAT16 (type 0c) primaries and an extended partition with three logicals (ext2 in the second), with gaps between logicals and at the end."

sfdisk_truth $N
blkid_probe $N $N.img "whole disk" 0 -
blkid_probe $N $N.img "partition 1 (83, ext4)" $((2048 * 512)) $((12288 * 512))
blkid_probe $N $N.img "partition 2 (82, swap)" $((14336 * 512)) $((8192 * 512))
blkid_probe $N $N.img "partition 3 (0c, FAT16)" $((22528 * 512)) $((16384 * 512))
blkid_probe $N $N.img "partition 6 (83, ext2)" $((49152 * 512)) $((8192 * 512))
ext_truth $N $N.img p1 $((2048 * 512))
ext_truth $N $N.img p6 $((49152 * 512))

# =============================================================================================
# 2. gpt-512 (the demo image)
# =============================================================================================
N=gpt-512
log_cmd $N "make_tree tree   # shell function in samples/make-samples.sh (fixed content, mode, times)"
run $N rm -f $N.img
run $N truncate -s 32M $N.img
run $N sgdisk -o -U 42AB0512-0000-4000-8000-000000000000 \
    -n 1:2048:18431  -t 1:EF00 -c "1:EFI System" -u 1:42AB0512-0001-4000-8000-000000000001 \
    -n 2:18432:43007 -t 2:8300 -c 2:root         -u 2:42AB0512-0002-4000-8000-000000000002 \
    -n 3:45056:53247 -t 3:8200 -c 3:swap         -u 3:42AB0512-0003-4000-8000-000000000003 \
    -n 4:53248:61439 -t 4:8E00 -c "4:données ☃"  -u 4:42AB0512-0004-4000-8000-000000000004 \
    $N.img
run $N rm -f p1.fat
run $N truncate -s 8M p1.fat
run $N mkfs.vfat -F 16 -s 2 -h 2048 -n EFI --invariant -i 0EF10512 p1.fat
place $N p1.fat $N.img $((2048 * 512))
make_ext $N p2.ext4 12 ext4 1024 0e4a0512-0002-4000-8000-0000000000e4 root
place $N p2.ext4 $N.img $((18432 * 512))
run $N rm -f p3.swap
run $N truncate -s 4M p3.swap
run $N mkswap -L swap -U 5a5a0512-0003-4000-8000-000000000082 p3.swap
place $N p3.swap $N.img $((45056 * 512))
declare_image $N 512 "32 MiB GPT disk (512-byte sectors) made with sgdisk: EFI System FAT16, ext4 root, swap and an empty LVM partition with a non-ASCII name, a 1 MiB gap and free space at the end; the make run demo."

sfdisk_truth $N
sgdisk_truth $N
blkid_probe $N $N.img "whole disk" 0 -
blkid_probe $N $N.img "partition 1 (EF00, FAT16)" $((2048 * 512)) $((16384 * 512))
blkid_probe $N $N.img "partition 2 (8300, ext4)" $((18432 * 512)) $((24576 * 512))
blkid_probe $N $N.img "partition 3 (8200, swap)" $((45056 * 512)) $((8192 * 512))
ext_truth $N $N.img p2 $((18432 * 512))

# =============================================================================================
# 3. gpt-4k: 4096-byte logical sectors, partitioned through a loop device
# =============================================================================================
N=gpt-4k
log_cmd $N "make_tree tree   # shell function in samples/make-samples.sh (fixed content, mode, times)"
run $N rm -f $N.img
run $N truncate -s 32M $N.img
log_cmd $N 'LOOP=$(losetup --sector-size 4096 -f --show gpt-4k.img)'
CUR_LOOP=$(losetup --sector-size 4096 -f --show $N.img)
LOOPS+=("$CUR_LOOP")
[[ $(blockdev --getss "$CUR_LOOP") == 4096 ]] || die "$CUR_LOOP does not have 4096-byte sectors"
run $N sgdisk -o -U 42AB4096-0000-4000-8000-000000000000 \
    -n 1:256:2303  -t 1:EF00 -c "1:EFI System" -u 1:42AB4096-0001-4000-8000-000000000001 \
    -n 2:2304:6399 -t 2:8300 -c 2:root         -u 2:42AB4096-0002-4000-8000-000000000002 \
    -n 3:6656:7679 -t 3:8300 -c 3:spare        -u 3:42AB4096-0003-4000-8000-000000000003 \
    "$CUR_LOOP"
run $N losetup -d "$CUR_LOOP"
LOOPS=()
CUR_LOOP=""
run $N rm -f p1.fat
run $N truncate -s 8M p1.fat
run $N mkfs.vfat -S 4096 -h 256 -n EFI4K --invariant -i 0EF14096 p1.fat
place $N p1.fat $N.img $((256 * 4096))
make_ext $N p2.ext4 16 ext4 4096 0e4a4096-0002-4000-8000-0000000000e4 root4k
place $N p2.ext4 $N.img $((2304 * 4096))
declare_image $N 4096 "32 MiB GPT disk with 4096-byte logical sectors (partitioned with sgdisk on a losetup --sector-size 4096 device): FAT12 with 4 KiB sectors, ext4, an empty partition, a 1 MiB gap."

# sfdisk and sgdisk assume 512-byte sectors on a plain file: ask them through a 4096 loop
# device again, now that the filesystems are in place (not part of made_with).
CUR_LOOP=$(losetup --sector-size 4096 -f --show --read-only $N.img)
LOOPS+=("$CUR_LOOP")
sfdisk_truth $N "$CUR_LOOP"
sgdisk_truth $N "$CUR_LOOP"
blkid_probe $N "$CUR_LOOP" "whole disk, through a 4096-byte-sector loop device" 0 -
losetup -d "$CUR_LOOP"
LOOPS=()
CUR_LOOP=""

capture "$TRUTH/$N.as512.sfdisk.json" "$TRUTH/$N.as512.sfdisk" sfdisk --json $N.img
blkid_probe $N $N.img "whole file, read as 512-byte sectors" 0 -
blkid_probe $N $N.img "partition 1 (EF00, FAT12, 4096-byte sectors)" $((256 * 4096)) $((2048 * 4096))
blkid_probe $N $N.img "partition 2 (8300, ext4)" $((2304 * 4096)) $((4096 * 4096))
ext_truth $N $N.img p2 $((2304 * 4096))

# =============================================================================================
# 4. gpt-damaged-primary / gpt-damaged-entries: copies of gpt-512
# =============================================================================================
N=gpt-damaged-primary
copy_log gpt-512 $N
run $N cp gpt-512.img $N.img
# Primary header at byte 512; first_usable_lba (u64 at header+40 = byte 552) 34 -> 2048.
# The header CRC32 (header+16) is left alone, so it no longer matches; the backup is intact.
run_stdin $N "import struct
with open('gpt-damaged-primary.img', 'r+b') as f:
    f.seek(512 + 40)
    assert struct.unpack('<Q', f.read(8))[0] == 34
    f.seek(512 + 40)
    f.write(struct.pack('<Q', 2048))
" python3 -
declare_image $N 512 "gpt-512 with the primary GPT header's first_usable_lba (byte 552) changed from 34 to 2048 without fixing its CRC32; the backup header is intact."

N=gpt-damaged-entries
copy_log gpt-512 $N
run $N cp gpt-512.img $N.img
# Primary entry array at LBA 2 (byte 1024), 128-byte entries; entry 2's starting_lba is the
# u64 at 1024 + 128 + 32 = 1184. Byte 1185 goes 0x48 -> 0x49 (start 18432 -> 18688). The
# header (and its copy of the array CRC) is untouched, so only the entry-array CRC fails.
run_stdin $N "with open('gpt-damaged-entries.img', 'r+b') as f:
    f.seek(1185)
    assert f.read(1) == b'\x48'
    f.seek(1185)
    f.write(b'\x49')
" python3 -
declare_image $N 512 "gpt-512 with one byte of the primary partition entry array changed (byte 1185, entry 2's starting_lba 18432 -> 18688), so the entry-array CRC32 fails; headers and backup array intact."

for N in gpt-damaged-primary gpt-damaged-entries; do
    sfdisk_truth $N
    sgdisk_truth $N
    blkid_probe $N $N.img "whole disk" 0 -
    blkid_probe $N $N.img "partition 1 (EF00, FAT16)" $((2048 * 512)) $((16384 * 512))
    blkid_probe $N $N.img "partition 2 (8300, ext4)" $((18432 * 512)) $((24576 * 512))
    blkid_probe $N $N.img "partition 3 (8200, swap)" $((45056 * 512)) $((8192 * 512))
done

# =============================================================================================
# 5. whole-disk-ext4
# =============================================================================================
N=whole-disk-ext4
log_cmd $N "make_tree tree   # shell function in samples/make-samples.sh (fixed content, mode, times)"
make_ext $N $N.img 16 ext4 4096 0e4a0000-0000-4000-8000-00000000d15c wholedisk
declare_image $N 512 "16 MiB ext4 filesystem (4 KiB blocks) with no partition table."
sfdisk_truth $N
blkid_probe $N $N.img "whole file" 0 -
ext_truth $N $N.img fs 0

# =============================================================================================
# 6. zero
# =============================================================================================
N=zero
run $N rm -f $N.img
run $N truncate -s 4M $N.img
declare_image $N 512 "4 MiB of zeros: no partition table, no filesystem."
sfdisk_truth $N
blkid_probe $N $N.img "whole file" 0 -

# =============================================================================================
# 7. truncated: gpt-512 cut at 20 MiB
# =============================================================================================
N=truncated
copy_log gpt-512 $N
run $N cp gpt-512.img $N.img
run $N truncate -s 20M $N.img
declare_image $N 512 "gpt-512 cut to its first 20 MiB: partition 2 (ext4) runs past the end, partitions 3 and 4 and the backup GPT lie wholly beyond it."
sfdisk_truth $N
sgdisk_truth $N
blkid_probe $N $N.img "whole file" 0 -
blkid_probe $N $N.img "partition 1 (EF00, FAT16)" $((2048 * 512)) $((16384 * 512))
blkid_probe $N $N.img "partition 2 (8300, ext4), with --size: runs past the end" $((18432 * 512)) $((24576 * 512))
blkid_probe $N $N.img "partition 2 (8300, ext4), --offset only" $((18432 * 512)) -
blkid_probe $N $N.img "partition 3 (8200, swap), wholly past the end" $((45056 * 512)) -

# =============================================================================================
# 8. ebr-loop: three logicals, then the last EBR links back to the first
# =============================================================================================
N=ebr-loop
run $N rm -f $N.img
run $N truncate -s 16M $N.img
run_stdin $N "label: dos
label-id: 0x0e0b1009
unit: sectors

start=2048, size=4096, type=83
start=8192, size=20480, type=5
start=10240, size=2048, type=83
start=14336, size=2048, type=83
start=18432, size=2048, type=83
" sfdisk --no-reread --no-tell-kernel $N.img
capture "$TRUTH/$N.before-patch.sfdisk.json" "$TRUTH/$N.before-patch.sfdisk" sfdisk --json $N.img
# sfdisk puts each EBR 2048 sectors before its logical (the first one at the extended start):
# EBRs at LBA 8192, 12288, 16384. The last EBR's link entry (byte 16384*512 + 446 + 16) is
# empty; make it type 05, start 0 (relative to the extended partition = the first EBR),
# size 4096 (first EBR + first logical), CHS fe ff ff.
run_stdin $N "import struct
last_ebr = 16384
with open('ebr-loop.img', 'r+b') as f:
    f.seek(last_ebr * 512 + 510)
    assert f.read(2) == b'\x55\xaa'
    f.seek(last_ebr * 512 + 446 + 16)
    assert f.read(16) == bytes(16)
    f.seek(last_ebr * 512 + 446 + 16)
    f.write(struct.pack('<B3sB3sII', 0, b'\xfe\xff\xff', 0x05, b'\xfe\xff\xff', 0, 4096))
" python3 -
declare_image $N 512 "16 MiB DOS disk with an extended partition of three logicals whose last EBR links back to the first EBR (an endless chain)."
sfdisk_truth $N
blkid_probe $N $N.img "whole disk" 0 -

# =============================================================================================
# 9. mbr-4-primaries-tiny
# =============================================================================================
N=mbr-4-primaries-tiny
run $N rm -f $N.img
run $N truncate -s 4M $N.img
run_stdin $N "label: dos
label-id: 0x71a71a71
unit: sectors

start=2048, size=1024, type=83
start=3072, size=1024, type=7, bootable
start=4096, size=2048, type=b
start=6200, size=1992, type=8e
" sfdisk --no-reread --no-tell-kernel $N.img
declare_image $N 512 "4 MiB DOS disk with four primaries (83, 07 bootable, 0b, 8e; the last one not aligned) and no filesystems."
sfdisk_truth $N
blkid_probe $N $N.img "whole disk" 0 -

# =============================================================================================
# Compress, write MANIFEST.json, swap the new outputs into samples/.
# =============================================================================================
cut -f1 manifest.tsv | while IFS= read -r name; do
    xz -9e -T1 -c "$name.img" >"$OUT/$name.img.xz"
done

first_line() { local text; text=$("$@" 2>&1); printf '%s' "${text%%$'\n'*}"; }
{
    printf 'sfdisk\t%s\n' "$(first_line sfdisk --version)"
    printf 'sgdisk\t%s\n' "$(first_line sgdisk --version)"
    printf 'mke2fs\t%s\n' "$(first_line mke2fs -V)"
    printf 'mkfs.vfat\t%s\n' "$(first_line mkfs.vfat -C version.fat 1440)"   # no --version; the banner
    printf 'mkswap\t%s\n' "$(first_line mkswap --version)"
    printf 'blkid\t%s\n' "$(first_line blkid --version)"
    printf 'xz\t%s\n' "$(first_line xz --version)"
} >versions.tsv

python3 - "$WORK" "$OUT/MANIFEST.json" <<'PY'
import hashlib, json, os, sys
work, dest = sys.argv[1], sys.argv[2]
versions = dict(line.rstrip("\n").split("\t", 1) for line in open(os.path.join(work, "versions.tsv")))
manifest = []
for line in open(os.path.join(work, "manifest.tsv"), encoding="utf-8"):
    name, sector_size, description = line.rstrip("\n").split("\t")
    image = os.path.join(work, name + ".img")
    digest = hashlib.sha256()
    with open(image, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with open(os.path.join(work, "logs", name + ".cmds"), encoding="utf-8") as f:
        commands = [c for c in f.read().split("\0") if c]
    manifest.append({
        "name": name,
        "file": name + ".img.xz",
        "size": os.path.getsize(image),
        "sha256": digest.hexdigest(),
        "sector_size": int(sector_size),
        "description": description,
        "made_with": commands,
        "tool_versions": versions,
    })
with open(dest, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2, ensure_ascii=False)
    f.write("\n")
PY

# Replace only what this script generates; README.md and anything else in samples/ stay.
rm -rf "$SAMPLES_DIR/truth" "$SAMPLES_DIR/MANIFEST.json"
rm -f "$SAMPLES_DIR"/*.img.xz
cp -r "$OUT/truth" "$SAMPLES_DIR/truth"
cp "$OUT/MANIFEST.json" "$OUT"/*.img.xz "$SAMPLES_DIR/"
chmod -R u=rwX,go=rX "$SAMPLES_DIR/truth" "$SAMPLES_DIR/MANIFEST.json" "$SAMPLES_DIR"/*.img.xz

printf 'make-samples: wrote %d images to %s (%s)\n' "$(wc -l <manifest.tsv)" "$SAMPLES_DIR" \
    "$(du -sh "$SAMPLES_DIR" | cut -f1)"
