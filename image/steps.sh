# Sourced by image/build.sh and image-vm/build.sh: logging, step timing and
# mount-safe removal. The caller sets BUILD_NAME (the log prefix) first.
START=$(date +%s.%N)
STEP_START=$START
log() { printf '%s: %s\n' "$BUILD_NAME" "$*" >&2; }
step_done() {
    local now
    now=$(date +%s.%N)
    awk -v a="$STEP_START" -v b="$now" -v s="$1" -v p="$BUILD_NAME" \
        'BEGIN { printf "%s: %-28s %6.1f s\n", p, s, b - a }' >&2
    STEP_START=$now
}
die() { log "$*"; exit 1; }
# rm -rf that first detaches mounts a killed build may have left inside.
remove_tree() {
    local dir=$1
    { findmnt -rn -o TARGET | grep -F "$dir/" || true; } | LC_ALL=C sort -r | xargs -r -n1 umount -l
    rm -rf "$dir"
}
