#!/usr/bin/env bash
# Streaming benchmark on SYNTHETIC checkpoints at real shapes (issue 5). Not part of ctest.
#   1. lsb synth mistral-7b (bf16, HF layout), then lsb compress it (peak RSS, throughput);
#   2. the disk's sequential read rate, measured in the same run on the layer regions of the
#      same file, page cache dropped: the best of pread O_DIRECT, buffered pread and mmap
#      (bench/bench_read_modes.cpp), with dd for reference;
#   3. decode 16 tokens with --mem-budget 400M, every layer re-read from the disk
#      (--drop-page-cache: O_DIRECT reads): peak RSS (/usr/bin/time -v), s/token, bytes read per
#      token, and the ratio of achieved to disk-bound speed; then 8 tokens with two weight slots
#      (no overlap of reading and repacking) for comparison;
#   4. tinyllama-1.1b resident versus --mem-budget 64M: tokens/s of both.
# Every figure printed here is from a synthetic model. Usage: bench/stream_7b.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
LSB=${LSB:-./build/lsb}
READ_MODES=${READ_MODES:-./build/bench/lsb_bench_read_modes}
WORK=${1:-build/bench-stream}
THREADS=${THREADS:-2}
mkdir -p "$WORK"
rss() { awk -F': ' '/Maximum resident set size/ {printf "%.1f MiB", $2/1024}' "$1"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1"; }

echo "== [synthetic] mistral-7b: synthesize"
[[ -f "$WORK/mistral-7b/config.json" ]] || /usr/bin/time -v "$LSB" synth --shape mistral-7b -o "$WORK/mistral-7b" --seed 1 -t "$THREADS" 2> "$WORK/synth.time" >/dev/null
echo "== [synthetic] mistral-7b: compress (default recipe)"
# SKIP_COMPRESS=1 reuses the .lsb and the figures of an earlier run (for iterating on decoding).
[[ -n "${SKIP_COMPRESS:-}" && -f "$WORK/mistral-7b.lsb" && -f "$WORK/compress.json" ]] || /usr/bin/time -v "$LSB" compress "$WORK/mistral-7b" -o "$WORK/mistral-7b.lsb" -t "$THREADS" --json > "$WORK/compress.json" 2> "$WORK/compress.time"
python3 - "$WORK/compress.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
big = max(t["params"] if "params" in t else t["shape"][0] * (t["shape"][1] if len(t["shape"]) > 1 else 1) for t in j["tensors"])
print(f"[synthetic] compress: {j['params']/1e9:.2f} B params, {j['input_bytes']/1e9:.2f} GB -> {j['output_bytes']/1e9:.3f} GB, "
      f"{j['bpw']:.3f} bpw, {j['seconds']:.0f} s ({j['input_bytes']/1e6/j['seconds']:.0f} MB/s of input), "
      f"peak RSS {j['peak_rss_bytes']/2**20:.0f} MiB (bound 2 x largest float32 tensor + 64 MB = {(2*4*big+64e6)/2**20:.0f} MiB)")
PY
echo "   /usr/bin/time: peak RSS $(rss "$WORK/compress.time"), wall $(wall "$WORK/compress.time")"

echo "== disk sequential read rate (layer regions of the file, page cache dropped)"
disk_rate() {  # best MB/s of the three read modes, printed as "N MB/s"
  "$READ_MODES" "$WORK/mistral-7b.lsb" 3 | tee -a "$WORK/read_modes.txt" | awk '/: +[0-9.]+ MB\/s$/ {v = $(NF-1) + 0; if (v > m) m = v} END {print m, "MB/s"}'
}
: > "$WORK/read_modes.txt"
DISK=$(disk_rate)
sed 's/^/   /' "$WORK/read_modes.txt"
echo "   dd O_DIRECT 64 MiB blocks: $(dd if="$WORK/mistral-7b.lsb" of=/dev/null bs=64M iflag=direct 2>&1 | awk '/copied/ {print $(NF-1), $NF}')"
echo "   disk rate used below: $DISK"

echo "== [synthetic] mistral-7b: decode 16 tokens, --mem-budget 400M, layers re-read from disk"
/usr/bin/time -v "$LSB" bench "$WORK/mistral-7b.lsb" --mem-budget 400M --drop-page-cache --kv-type f16 \
  --prompt-tokens 1 --decode-tokens 16 --reps 1 -t "$THREADS" --json > "$WORK/decode.json" 2> "$WORK/decode.time"
/usr/bin/time -v "$LSB" bench "$WORK/mistral-7b.lsb" --mem-budget 400M --drop-page-cache --kv-type f16 --stream-slots 2 \
  --prompt-tokens 1 --decode-tokens 8 --reps 1 -t "$THREADS" --json > "$WORK/decode2.json" 2> "$WORK/decode2.time"
DISK_AFTER=$(disk_rate)
python3 - "$WORK/decode.json" "$DISK" "$WORK/decode2.json" "$DISK_AFTER" <<'PY'
import json, sys
def rate(s):
    val, unit = s.split()
    return float(val) * {"GB/s": 1e9, "MB/s": 1e6, "kB/s": 1e3}[unit]
j = json.load(open(sys.argv[1]))["models"][0]
j2 = json.load(open(sys.argv[3]))["models"][0]
disk, disk_after = rate(sys.argv[2]), rate(sys.argv[4])
tps = j["decode_tok_per_s"]["median"]
bpt = j["weight_bytes_per_token"]
bound = disk / bpt
st = j["streaming"]
print(f"[synthetic] decode: {1/tps:.2f} s/token, {bpt/1e6:.0f} MB read per token, disk {disk/1e6:.0f} MB/s "
      f"(again after the runs: {disk_after/1e6:.0f} MB/s) -> disk-bound {bound:.3f} tok/s; "
      f"achieved {tps:.3f} tok/s = {tps/bound:.2f} of disk-bound ({tps*bpt/max(disk, disk_after):.2f} against the "
      f"faster disk measurement)")
print(f"   {st['slots']} slots, {'O_DIRECT' if st['direct_io'] else 'buffered'} reads, "
      f"{st['file_bytes_read']/1e9:.1f} GB read at {st['file_bytes_read']/1e6/st['read_seconds']:.0f} MB/s while reading; "
      f"reader busy {100*st['reader_busy_fraction']:.0f}% and builder {100*st['build_seconds']/st['bench_seconds']:.0f}% of the run")
t2 = j2["decode_tok_per_s"]["median"]
print(f"[synthetic] decode with 2 slots (reading and repacking in turn): {1/t2:.2f} s/token = {t2/bound:.2f} of disk-bound")
PY
echo "   /usr/bin/time: peak RSS $(rss "$WORK/decode.time") with 3 slots, $(rss "$WORK/decode2.time") with 2 (budget 400 MiB)"

echo "== [synthetic] tinyllama-1.1b: resident vs --mem-budget 64M (lsb1 everywhere)"
[[ -f "$WORK/tinyllama/config.json" ]] || "$LSB" synth --shape tinyllama-1.1b -o "$WORK/tinyllama" --seed 1 -t "$THREADS" >/dev/null
[[ -f "$WORK/tinyllama.lsb" ]] || "$LSB" compress "$WORK/tinyllama" -o "$WORK/tinyllama.lsb" --scheme lsb1 -t "$THREADS" >/dev/null
/usr/bin/time -v "$LSB" bench "$WORK/tinyllama.lsb" --prompt-tokens 16 --decode-tokens 32 --reps 3 -t "$THREADS" --json > "$WORK/tiny_resident.json" 2> "$WORK/tiny_resident.time"
/usr/bin/time -v "$LSB" bench "$WORK/tinyllama.lsb" --mem-budget 64M --kv-type f16 --prompt-tokens 16 --decode-tokens 32 --reps 3 -t "$THREADS" --json > "$WORK/tiny_stream.json" 2> "$WORK/tiny_stream.time"
python3 - "$WORK/tiny_resident.json" "$WORK/tiny_stream.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["models"][0]; s = json.load(open(sys.argv[2]))["models"][0]
print(f"[synthetic] tinyllama-1.1b decode: resident {r['decode_tok_per_s']['median']:.1f} tok/s, "
      f"--mem-budget 64M {s['decode_tok_per_s']['median']:.1f} tok/s")
PY
echo "   peak RSS: resident $(rss "$WORK/tiny_resident.time"), streaming $(rss "$WORK/tiny_stream.time") (budget 64 MiB)"
