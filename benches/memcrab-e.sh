#!/bin/sh
# memcrab with a memory file (-e), for the load generator's MEMCRAB_BIN: the same flags the
# load generator passes, plus `-e` on a file of this process's own (so no run restores
# another's items). Compare against memcrab without it (MEMCACHED_BIN=target/release/memcrab):
#   MEMCRAB_BIN=benches/memcrab-e.sh MEMCACHED_BIN=target/release/memcrab \
#       cargo run --release -p memcrab-loadgen -- --only get-set,get-set-pipe16,value-4k --rounds 5
#   rm -f /dev/shm/memcrab-bench-*
here=$(cd "$(dirname "$0")/.." && pwd)
exec "$here/target/release/memcrab" "$@" -e "/dev/shm/memcrab-bench-$$"
