#!/usr/bin/env bash
# The emulated home cluster: a head and three workers, each a process in its
# own network namespace and cgroup-v1 memory cap, on tbf-shaped links with a
# delay proxy in front of every worker (netem is missing from these kernels).
# The model is a synthetic Llama-shaped Q4_0 GGUF bigger than any one cap.
#
# Reports TPOT, Halda's prediction, every device's peak RSS, major faults,
# cgroup limit hits, OOM kills and swap, and the same model on the head's
# cap alone. Disks are slowed per device with cgroup-v1 blkio throttling. Needs root (namespaces, tc, cgroups). Everything it creates is
# removed on exit.
#
# Usage: sudo scripts/cluster-bench.sh [tokens]
set -euo pipefail
cd "$(dirname "$0")/.."
tokens=${1:-32}

# --- the cluster (edit here) -------------------------------------------------
layers=40 embd=2048 ff=8192               # ~1.5 GB of Q4_0 weights
caps_mb=(900 520 520 520)                 # head, then workers
rate=300mbit                              # each link, each direction
disk_mbps=(400 250 250 250)               # each device's disk read speed (blkio throttle), MB/s
delay_ms=4                                # added each way per link (RTT +8 ms)
threads=2
# -----------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || { echo "cluster-bench needs root (namespaces, tc, cgroups)" >&2; exit 1; }
./scripts/setup.sh >/dev/null
prima=$PWD/target/release/prima
work=$(mktemp -d /tmp/prima-cluster.XXXX)
model=$work/synth.gguf
cg=/sys/fs/cgroup/memory
blk=/sys/fs/cgroup/blkio
disk=$(stat -c '%t:%T' "$(df --output=source "$PWD" | tail -1)" | python3 -c 'import sys; a,b=sys.stdin.read().strip().split(":"); print(f"{int(a,16)}:{int(b,16)}")')
n=${#caps_mb[@]}

# Kills every process in memory cgroup $1 and removes it (and its blkio
# twin). By cgroup, not by `$!`: that names the subshell around on_device,
# and workers that outlived a run kept their memory charged to the next
# run's cgroup of the same name, so later runs planned with less and less.
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
    for i in $(seq 0 $((n - 1))); do
        stop_cgroup "prima-d$i"
        ip netns del "prima-d$i" 2>/dev/null || true
        ip link del "prv$i" 2>/dev/null || true
    done
    stop_cgroup prima-alone
    ip link del prima-br0 2>/dev/null || true
}

cleanup() {
    teardown
    # The last run's logs and JSON stay for a look.
    rm -rf /tmp/prima-cluster-last && mkdir -p /tmp/prima-cluster-last
    cp "$work"/*.log "$work"/*.json /tmp/prima-cluster-last/ 2>/dev/null || true
    rm -rf "$work"
}
teardown   # what an interrupted earlier run left behind
trap cleanup EXIT

"$prima" synth --like .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf -o "$model" \
    --layers $layers --embd $embd --ff $ff --heads 16 --kv-heads 4
# Page cache is charged to the cgroup that first reads a page: drop the
# model's pages (written from here) so each capped device pays for its own.
evict() { python3 -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)' "$1"; }
evict "$model"
# Every emulated device shares this VM's cores and disk: let writes of the
# step before (the model, the workers' layer caches) drain before the next
# measures anything, profiles included.
settle() { sync; sleep 5; }
settle

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
    # Shape both directions of the device's link.
    tc qdisc add dev prv$i root tbf rate $rate burst 64kb latency 100ms
    ip netns exec $ns tc qdisc add dev eth0 root tbf rate $rate burst 64kb latency 100ms
    mkdir -p $cg/prima-d$i
    echo $((caps_mb[i] << 20)) >$cg/prima-d$i/memory.limit_in_bytes
    echo 0 >$cg/prima-d$i/memory.swappiness
    mkdir -p $blk/prima-d$i
    echo "$disk $((disk_mbps[i] * 1000000))" >$blk/prima-d$i/blkio.throttle.read_bps_device
done

# Runs "$@" in device $1's network namespace and memory cgroup. nsenter,
# not `ip netns exec`: that remounts /sys, which hides the cgroup limits
# the device must see.
on_device() {
    local i=$1; shift
    sh -c 'echo $$ >'"$cg/prima-d$i/cgroup.procs"'; echo $$ >'"$blk/prima-d$i/cgroup.procs"'; exec "$@"' sh \
        nsenter --net=/run/netns/prima-d$i "$@"
}

ring=()
declare -a worker_pid
for i in $(seq 1 $((n - 1))); do
    on_device $i env PRIMA_CACHE="$work/cache$i" "$prima" worker --listen 127.0.0.1:9000 -t $threads \
        --name "dev$i" 2>"$work/worker$i.log" &
    on_device $i "$prima" delay-proxy --listen 10.88.0.$((10 + i)):9001 --to 127.0.0.1:9000 --delay-ms $delay_ms \
        2>"$work/proxy$i.log" &
    ring+=("10.88.0.$((10 + i)):9001")
    # One at a time: each worker profiles itself on start, and on this one
    # VM concurrent profiles would measure each other, not the device.
    for _ in $(seq 100); do grep -q "listening on" "$work/worker$i.log" && break; sleep 0.1; done
done
ring_flag=$(IFS=,; echo "${ring[*]}")

run_head() {
    on_device 0 "$prima" run -m "$model" -p "Once upon a time" -n "$tokens" --ignore-eos --temp 0 -t $threads \
        --ring "$ring_flag" --json "$@"
}
echo "warm-up run: Halda plans, the head ships each worker its layers over the shaped links" >&2
run_head >/dev/null 2>"$work/head-warm.log" || { cat "$work/head-warm.log" >&2; exit 1; }
evict "$model"
settle
for i in $(seq 0 $((n - 1))); do echo 0 >$cg/prima-d$i/memory.max_usage_in_bytes; done
faults_before=()
for i in $(seq 0 $((n - 1))); do faults_before+=("$(awk '/^total_pgmajfault /{print $2}' $cg/prima-d$i/memory.stat)"); done
on_device 0 /usr/bin/env time -f "%M" -o "$work/head-rss" \
    "$prima" run -m "$model" -p "Once upon a time" -n "$tokens" --ignore-eos --temp 0 -t $threads \
    --ring "$ring_flag" --json >"$work/ring.json" 2>"$work/head.log" || { cat "$work/head.log" >&2; exit 1; }

grep -h "layer check\|Halda\|notice\|MiB available" "$work/head.log" >&2 || true
report=()
for i in $(seq 0 $((n - 1))); do
    d=$cg/prima-d$i
    [ "$i" = 0 ] || worker_pid[i]=$(pgrep -n -f -- "--name dev$i\$")
    faults=$(( $(awk '/^total_pgmajfault /{print $2}' $d/memory.stat) - faults_before[i] ))
    if [ "$i" = 0 ]; then rss_kb=$(cat "$work/head-rss"); else rss_kb=$(awk '/VmHWM/{print $2}' /proc/${worker_pid[i]}/status); fi
    name=$([ "$i" = 0 ] && echo head || echo "dev$i")
    report+=("$name ${caps_mb[i]} $rss_kb $(($(cat $d/memory.max_usage_in_bytes) >> 20)) $faults $(cat $d/memory.failcnt) $(awk '/oom_kill /{print $2}' $d/memory.oom_control) $(awk '/^total_swap /{print $2}' $d/memory.stat)")
done

# The same model on the head's cap alone.
evict "$model"
mkdir -p $cg/prima-alone
echo $((caps_mb[0] << 20)) >$cg/prima-alone/memory.limit_in_bytes
echo 0 >$cg/prima-alone/memory.swappiness
alone_json=$(sh -c 'echo $$ >'"$cg/prima-alone/cgroup.procs"'; echo $$ >'"$blk/prima-d0/cgroup.procs"'; exec "$@"' sh \
    "$prima" run -m "$model" -p "Once upon a time" -n "$tokens" --ignore-eos --temp 0 -t $threads --json 2>/dev/null)
alone_oom=$(awk '/oom_kill /{print $2}' $cg/prima-alone/memory.oom_control)

DISKS="${disk_mbps[*]}" python3 - "$work/ring.json" "$alone_json" "$alone_oom" "$(du -b "$model" | cut -f1)" "${report[@]}" <<'PY'
import json, os, sys
ring = json.load(open(sys.argv[1]))
alone = json.loads(sys.argv[2])
alone_oom, size = int(sys.argv[3]), int(sys.argv[4])
rows = [r.split() for r in sys.argv[5:]]
t = ring["timings"]["ms_per_token"]
p = ring["ring"]["predicted_ms_per_token"]
print(f"model: synthetic llama, {size / 1e9:.2f} GB; caps (MB): {', '.join(r[1] for r in rows)}; disks (MB/s): {os.environ['DISKS']}")
print(f"plan: k={ring['ring']['k']}; " + "; ".join(f"{d['name']}: {','.join(d['layers'])}" for d in ring["ring"]["devices"]))
print(f"ring TPOT {t:.1f} ms; Halda predicted {p:.1f} ms; error {abs(p - t) / t * 100:.1f}% (limit 15%)")
print(f"one device on the head's cap alone: TPOT {alone['timings']['ms_per_token']:.1f} ms, OOM kills {alone_oom}"
      f" -> ring is {alone['timings']['ms_per_token'] / t:.2f}x faster")
print("| device | in ring | cap MB | peak RSS MB | cgroup peak MB | major faults | limit hits | OOM kills | swap |")
print("|---|---|---|---|---|---|---|---|---|")
names = [d["name"] for d in ring["ring"]["devices"]]
for name, cap, rss, peak, faults, fails, oom, swap in rows:
    used = name == "head" or any(f"({name}," in x for x in names)
    print(f"| {name} | {'yes' if used else 'dropped'} | {cap} | {int(rss) / 1024:.0f} | {peak} | {faults} | {fails} | {oom} | {swap} |")
print("per token, measured (Halda's prediction):")
for d in ring["ring"]["devices"]:
    m, h = d.get("per_token") or {}, d.get("predicted_per_token") or {}
    print(f"  {d['name']}: compute {m.get('compute_ms', 0):.1f} ({h.get('compute_ms', 0):.1f}) ms,"
          f" network wait {m.get('network_ms', 0):.1f} (hop {h.get('hop_ms', 0):.1f}) ms,"
          f" disk {m.get('disk_ms', 0):.1f} ({h.get('disk_ms', 0):.1f}) ms")
ok = abs(p - t) / t <= 0.15 and all(r[6] == "0" for r in rows) and all(r[7] in ("0", "") for r in rows)
print("no OOM kills:", all(r[6] == "0" for r in rows), "| no swap:", all(r[7] in ("0", "") for r in rows))
print("checks:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
