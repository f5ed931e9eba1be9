#!/usr/bin/env bash
# The emulated home cluster: a head and workers, each a process in its own
# network namespace and cgroup-v1 memory cap (limit and memsw), on
# tbf-shaped links, optionally with a delay proxy in front of every worker
# (netem is missing from these kernels) and per-device disk throttles. The
# model is a synthetic Llama-shaped Q4_0 GGUF bigger than any one cap.
#
# For the chosen preset it runs, with the page cache evicted before each:
#   1. the ring capped, `--layer-window auto` (after a warm-up run that
#      ships each worker its layers);
#   2. the same ring (the same windows) with the caps lifted;
#   3. one device alone, capped at the head's cap, and uncapped.
# It prints each device's plan, measured and predicted time per token
# (compute, network wait, disk), major faults, cgroup peak, limit hits, OOM
# kills and swap, and the preset's checks. Needs root (namespaces, tc,
# cgroups). Everything it creates is removed on exit; the last run's logs
# and JSON stay in /tmp/prima-cluster-last.
#
# Usage: sudo scripts/cluster-bench.sh [anchor|over|roomy] [tokens]
#   anchor  ../shared/guide/cluster-anchor.md: 24 layers (724 MB), 3 devices,
#           each capped at 40% of the file, 300 Mbit/s, 1 thread, no delay
#   over    the same with caps of 25% each: the cluster holds 75% of the model
#   roomy   the earlier setup: 40 layers (1.5 GB), caps 900/520/520/520 MB,
#           disks 400/250/250/250 MB/s, 4 ms each way, 2 threads
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-anchor}
tokens=${2:-64}

shape=(--layers 24 --embd 2048 --ff 5632 --heads 16 --kv-heads 4)
rate=300mbit delay_ms=0 threads=1 disk_mbps=()
case $preset in
    anchor) cap_share=40 n=3 ;;
    over) cap_share=25 n=3 disk_mbps=(400 400 400) ;;
    roomy)
        shape=(--layers 40 --embd 2048 --ff 8192 --heads 16 --kv-heads 4)
        caps_mb=(900 520 520 520) n=4 delay_ms=4 threads=2 disk_mbps=(400 250 250 250)
        ;;
    *) echo "unknown preset '$preset' (anchor, over or roomy)" >&2; exit 2 ;;
esac
prompt="Once upon a time"

[ "$(id -u)" = 0 ] || { echo "cluster-bench needs root (namespaces, tc, cgroups)" >&2; exit 1; }
./scripts/setup.sh >/dev/null
prima=$PWD/target/release/prima
work=$(mktemp -d /tmp/prima-cluster.XXXX)
model=$work/synth.gguf
cg=/sys/fs/cgroup/memory
blk=/sys/fs/cgroup/blkio
disk=$(stat -c '%t:%T' "$(df --output=source "$work" | tail -1)" | python3 -c 'import sys; a,b=sys.stdin.read().strip().split(":"); print(f"{int(a,16)}:{int(b,16)}")')

# Kills every process in memory cgroup $1 and removes it (and its blkio
# twin). By cgroup, not by `$!`: that names the subshell around on_device.
stop_cgroup() {
    [ -d "$cg/$1" ] || return 0
    for _ in $(seq 50); do
        [ -n "$(cat "$cg/$1/cgroup.procs")" ] || break   # (cgroupfs files have size 0)
        xargs -r kill -9 <"$cg/$1/cgroup.procs" 2>/dev/null || true
        sleep 0.1
    done
    rmdir "$cg/$1" 2>/dev/null || true
    rmdir "$blk/$1" 2>/dev/null || true
}

teardown() {
    for i in $(seq 0 5); do
        stop_cgroup "prima-d$i"
        ip netns del "prima-d$i" 2>/dev/null || true
        ip link del "prv$i" 2>/dev/null || true
    done
    stop_cgroup prima-alone
    ip link del prima-br0 2>/dev/null || true
}

cleanup() {
    teardown
    rm -rf /tmp/prima-cluster-last && mkdir -p /tmp/prima-cluster-last
    cp "$work"/*.log "$work"/*.json "$work"/*.rows /tmp/prima-cluster-last/ 2>/dev/null || true
    rm -rf "$work"
}
teardown   # what an interrupted earlier run left behind
trap cleanup EXIT

"$prima" synth --like .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf -o "$model" "${shape[@]}" >&2
size=$(stat -c %s "$model")
if [ -z "${caps_mb+x}" ]; then
    cap=$((size * cap_share / 100 >> 20))
    caps_mb=()
    for _ in $(seq $n); do caps_mb+=("$cap"); done
fi
# Page cache is charged to the cgroup that first reads a page: drop the
# model's and the workers' layer files before every measured run, so each
# capped device reads its own.
evict() {
    for f in "$model" "$work"/cache*/layers/*.gguf; do
        [ -f "$f" ] || continue
        python3 -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)' "$f"
    done
}
# Every emulated device shares this VM's cores and disk: let writes drain
# before the next step measures anything, profiles included.
settle() { sync; sleep 3; }
evict
settle

set_cap() { # device, MB (0: no cap)
    local d=$cg/$1 bytes=$(($2 << 20))
    [ "$2" = 0 ] && bytes=-1
    # memsw must stay >= limit: raise memsw first when lifting, limit first when capping.
    if [ "$bytes" = -1 ]; then
        echo -1 >"$d/memory.memsw.limit_in_bytes" 2>/dev/null || true
        echo -1 >"$d/memory.limit_in_bytes"
    else
        echo -1 >"$d/memory.memsw.limit_in_bytes" 2>/dev/null || true
        echo "$bytes" >"$d/memory.limit_in_bytes"
        echo "$bytes" >"$d/memory.memsw.limit_in_bytes" 2>/dev/null || true
    fi
}

ip link add prima-br0 type bridge
ip addr add 10.88.0.1/24 dev prima-br0
ip link set prima-br0 up
for i in $(seq 0 $((n - 1))); do
    ns=prima-d$i
    ip netns add $ns
    ip link add prv$i type veth peer name eth0 netns $ns
    ip link set prv$i master prima-br0 up
    ip -n $ns addr add 10.88.0.$((10 + i))/24 dev eth0
    ip -n $ns link set eth0 up
    ip -n $ns link set lo up
    tc qdisc add dev prv$i root tbf rate $rate burst 64kb latency 100ms
    ip netns exec $ns tc qdisc add dev eth0 root tbf rate $rate burst 64kb latency 100ms
    mkdir -p $cg/prima-d$i $blk/prima-d$i
    echo 0 >$cg/prima-d$i/memory.swappiness
    if [ ${#disk_mbps[@]} -gt 0 ]; then
        echo "$disk $((disk_mbps[i] * 1000000))" >$blk/prima-d$i/blkio.throttle.read_bps_device
    fi
done

# Runs "$@" in device $1's network namespace and cgroups. nsenter, not
# `ip netns exec`: that remounts /sys, which hides the cgroup limits the
# device must see.
on_device() {
    local i=$1; shift
    sh -c 'echo $$ >'"$cg/prima-d$i/cgroup.procs"'; echo $$ >'"$blk/prima-d$i/cgroup.procs"'; exec "$@"' sh \
        nsenter --net=/run/netns/prima-d$i "$@"
}

ring=()
for i in $(seq 1 $((n - 1))); do
    if [ "$delay_ms" = 0 ]; then ring+=("10.88.0.$((10 + i)):9000"); else ring+=("10.88.0.$((10 + i)):9001"); fi
done
ring_flag=$(IFS=,; echo "${ring[*]}")

# Starts every worker under the caps in force (each profiles itself on
# start, one at a time: concurrent profiles on one VM would measure each other).
start_workers() {
    for i in $(seq 1 $((n - 1))); do
        local listen=10.88.0.$((10 + i)):9000
        [ "$delay_ms" = 0 ] || listen=127.0.0.1:9000
        on_device $i env PRIMA_CACHE="$work/cache$i" "$prima" worker --listen "$listen" -t $threads \
            --name "dev$i" 2>"$work/worker$i-$1.log" &
        if [ "$delay_ms" != 0 ]; then
            on_device $i "$prima" delay-proxy --listen 10.88.0.$((10 + i)):9001 --to 127.0.0.1:9000 \
                --delay-ms $delay_ms 2>"$work/proxy$i.log" &
        fi
        for _ in $(seq 100); do grep -q "listening on" "$work/worker$i-$1.log" && break; sleep 0.1; done
    done
}
stop_workers() {
    for i in $(seq 1 $((n - 1))); do
        [ -d $cg/prima-d$i ] || continue
        xargs -r kill -9 <"$cg/prima-d$i/cgroup.procs" 2>/dev/null || true
    done
    sleep 0.5
}

# One measured head run: page cache evicted, peaks and faults reset.
# Writes $work/$1.json and the device rows to $work/$1.rows.
measure_ring() {
    local name=$1; shift
    evict
    settle
    local faults=()
    for i in $(seq 0 $((n - 1))); do
        echo 0 >$cg/prima-d$i/memory.max_usage_in_bytes
        faults+=("$(awk '/^total_pgmajfault /{print $2}' $cg/prima-d$i/memory.stat)")
    done
    on_device 0 /usr/bin/env time -f "%M" -o "$work/$name-head-rss" \
        "$prima" run -m "$model" -p "$prompt" -n "$tokens" --ignore-eos --temp 0 -t $threads \
        --ring "${ring_used:-$ring_flag}" --json -v "$@" >"$work/$name.json" 2>"$work/$name.log" || { cat "$work/$name.log" >&2; exit 1; }
    : >"$work/$name.rows"
    for i in $(seq 0 $((n - 1))); do
        local d=$cg/prima-d$i rss_kb
        if [ "$i" = 0 ]; then rss_kb=$(cat "$work/$name-head-rss"); else
            rss_kb=$(awk '/VmHWM/{print $2}' "/proc/$(pgrep -n -f -- "--name dev$i\$")/status"); fi
        echo "$([ "$i" = 0 ] && echo head || echo "dev$i") $(cat $d/memory.limit_in_bytes) $rss_kb" \
            "$(($(cat $d/memory.max_usage_in_bytes) >> 20)) $(($(awk '/^total_pgmajfault /{print $2}' $d/memory.stat) - faults[i]))" \
            "$(cat $d/memory.failcnt) $(awk '/oom_kill /{print $2}' $d/memory.oom_control) $(awk '/^total_swap /{print $2}' $d/memory.stat)" \
            >>"$work/$name.rows"
    done
}

# 1. Capped, Halda's plan.
for i in $(seq 0 $((n - 1))); do set_cap prima-d$i "${caps_mb[i]}"; done
start_workers capped
echo "warm-up run: Halda plans, the head ships each worker its layers" >&2
on_device 0 "$prima" run -m "$model" -p "$prompt" -n 4 --temp 0 -t $threads --ring "$ring_flag" \
    >/dev/null 2>"$work/warm.log" || { cat "$work/warm.log" >&2; exit 1; }
# A plan that differs from the warm-up's ships layers inside the measured
# run (the head's profile varies a little between runs): measure again.
for _ in 1 2 3; do
    measure_ring capped
    grep -q "^sent .* of layers" "$work/capped.log" || break
    echo "the plan changed since the warm-up and layers were shipped: measuring again" >&2
done
grep -h "layer check\|Halda\|notice\|MiB available\|memory:" "$work/capped.log" >&2 || true
# The capped plan's windows and kept workers ("device i (name, addr)"), for the uncapped run.
read -r windows kept_ring < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["ring"]
sizes = [int(d["layers"][0].split("..")[1]) - int(d["layers"][0].split("..")[0]) for d in r["devices"]]
addrs = [d["name"].rstrip(")").split(", ")[-1] for d in r["devices"][1:]]
print(",".join(map(str, sizes)), ",".join(addrs))
' "$work/capped.json")

# 2. The same windows with the caps lifted (workers restart to profile uncapped).
stop_workers
for i in $(seq 0 $((n - 1))); do set_cap prima-d$i 0; done
start_workers uncapped
ring_used=$kept_ring measure_ring uncapped --layer-window "$windows"
stop_workers

# 3. One device alone, capped at the head's cap and uncapped.
alone() { # cap MB (0: none)
    evict
    settle
    mkdir -p $cg/prima-alone
    echo 0 >$cg/prima-alone/memory.swappiness
    set_cap prima-alone "$1"
    echo 0 >$cg/prima-alone/memory.max_usage_in_bytes
    sh -c 'echo $$ >'"$cg/prima-alone/cgroup.procs"'; echo $$ >'"$blk/prima-d0/cgroup.procs"'; exec "$@"' sh \
        "$prima" run -m "$model" -p "$prompt" -n "$tokens" --ignore-eos --temp 0 -t $threads --json 2>"$work/alone-$1.log"
    echo "{\"peak_mb\": $(($(cat $cg/prima-alone/memory.max_usage_in_bytes) >> 20)), \"oom\": $(awk '/oom_kill /{print $2}' $cg/prima-alone/memory.oom_control)}" \
        >"$work/alone-$1.cg.json"
}
alone "${caps_mb[0]}" >"$work/alone-capped.json"
alone 0 >"$work/alone-uncapped.json"

PRESET=$preset DISKS="${disk_mbps[*]:-unthrottled}" python3 scripts/cluster-report.py "$work" "$size" "${caps_mb[0]}"
