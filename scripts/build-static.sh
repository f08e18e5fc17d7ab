#!/usr/bin/env bash
# Builds memcrab and the container entrypoint (docker/entrypoint) as fully static glibc
# binaries on the host, and stages the runtime image's root filesystem for
# docker/Dockerfile.prebuilt:
#
#   target/static/<triple>/release/memcrab               (unstripped, with debug info)
#   target/static/context/rootfs/usr/local/bin/memcrab   (stripped)
#   target/static/context/rootfs/usr/local/bin/memcached -> memcrab
#   target/static/context/rootfs/usr/local/bin/memcrab-entrypoint
#   target/static/context/rootfs/usr/local/bin/docker-entrypoint.sh -> memcrab-entrypoint
#   target/static/context/rootfs/entrypoint.sh -> usr/local/bin/docker-entrypoint.sh
#   target/static/context/rootfs/run.sh, opt/bitnami/scripts/memcached/{run,entrypoint}.sh,
#       usr/bin/pgrep -> the entrypoint (Bitnami's chart runs these names)
#   target/static/context/cache-state/      (empty: /cache-state, owned by the image's user)
#   target/static/context/rootfs/etc/{passwd,group,nsswitch.conf}   (from docker/rootfs)
#
# It uses its own target directory (CARGO_TARGET_DIR, default target/static) so it never
# touches target/release. No rustup target is needed: glibc's static libraries
# (libc6-dev) and `+crt-static` give a binary that runs in an empty (FROM scratch) image.
#
# Then: docker build -f docker/Dockerfile.prebuilt -t memcrab-memcached:dev target/static/context
set -euo pipefail
cd "$(dirname "$0")/.."

triple="$(uname -m)-unknown-linux-gnu"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/static}"
export RUSTFLAGS="-C target-feature=+crt-static"

cargo build --release --locked --target "$triple" --bin memcrab
cargo build --release --locked --target "$triple" --manifest-path docker/entrypoint/Cargo.toml

out="$CARGO_TARGET_DIR/$triple/release"
for bin in memcrab memcrab-entrypoint; do
    # A static binary has no program interpreter (no PT_INTERP / .interp section).
    if readelf -lW "$out/$bin" | grep -q 'Requesting program interpreter'; then
        echo "build-static.sh: $out/$bin is dynamically linked" >&2
        exit 1
    fi
done

context="$CARGO_TARGET_DIR/context"
rm -rf "$context"
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc"
strip -o "$context/rootfs/usr/local/bin/memcrab" "$out/memcrab"
cp "$out/memcrab-entrypoint" "$context/rootfs/usr/local/bin/memcrab-entrypoint"
ln -s memcrab "$context/rootfs/usr/local/bin/memcached"
ln -s memcrab-entrypoint "$context/rootfs/usr/local/bin/docker-entrypoint.sh"
ln -s usr/local/bin/docker-entrypoint.sh "$context/rootfs/entrypoint.sh"
mkdir -p "$context/rootfs/opt/bitnami/scripts/memcached" "$context/rootfs/usr/bin" \
    "$context/cache-state"
ln -s usr/local/bin/memcrab-entrypoint "$context/rootfs/run.sh"
ln -s /usr/local/bin/memcrab-entrypoint "$context/rootfs/opt/bitnami/scripts/memcached/run.sh"
ln -s /usr/local/bin/memcrab-entrypoint \
    "$context/rootfs/opt/bitnami/scripts/memcached/entrypoint.sh"
ln -s ../local/bin/memcrab-entrypoint "$context/rootfs/usr/bin/pgrep"
cp docker/rootfs/etc/passwd docker/rootfs/etc/group docker/rootfs/etc/nsswitch.conf \
    "$context/rootfs/etc/"
chmod 0644 "$context/rootfs/etc/"*
echo "static binaries: $out/memcrab $out/memcrab-entrypoint"
echo "image context:   $context (docker build -f docker/Dockerfile.prebuilt $context)"
