#!/usr/bin/env bash
# The main job on the built-in sample image: import, mount, show the tree, write
# into a container, diff, commit, unmount. Uses a throw-away store unless
# LAMINA_ROOT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
lamina=$PWD/target/release/lamina
work=$(mktemp -d)
export LAMINA_ROOT=${LAMINA_ROOT:-$work/store}
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  "$lamina" umount "$mnt" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ lamina %s\033[0m\n' "$*"; "$lamina" "$@"; }
step sample
step images
step history lamina-sample
step drivers
step create lamina-sample demo
step mount demo "$mnt"
printf '\n\033[1m$ find %s | head\033[0m\n' "$mnt"; (cd "$mnt" && find . | sort | head -20)
printf '\n\033[1m# write into the container\033[0m\n'
echo "written by the demo" > "$mnt/app/new.txt"
rm "$mnt/app/hello.txt"
chmod 0700 "$mnt/app/run.sh"
step diff demo
step umount "$mnt"
step commit demo demo-committed:v1
step images
step rm demo
