#!/usr/bin/env bash
# Quality at a given size (issue 11): bookworm-27m compressed with `--target-bpw` at each target,
# calibrated on bookworm_calib.txt only, then measured against the bf16 original with
# `lsb eval --ref` on bookworm_valid.txt (ctx 512; the first CHUNKS windows, 0 = the whole file).
# Writes WORK/curve.md (table, llama.cpp's i-quants beside) and WORK/curve.svg (KLD against
# whole-file bits per weight). Not part of ctest: about 10 minutes per target on 2 cores.
#
#   bench/quality_curve.sh [WORK]          TARGETS="1.63 2.13" CHUNKS=40 THREADS=2 LSB=./build/lsb
set -euo pipefail
cd "$(dirname "$0")/.."
LSB=${LSB:-./build/lsb}
WORK=${1:-build/quality-curve}
TARGETS=${TARGETS:-1.63 1.81 2.13 2.38 2.63 3.5}
CHUNKS=${CHUNKS:-0}
THREADS=${THREADS:-2}
SHARED=${SHARED:-../shared}
MODEL=$SHARED/models/bookworm-27m
CALIB=$SHARED/data/bookworm_calib.txt
VALID=$SHARED/data/bookworm_valid.txt
mkdir -p "$WORK"

[[ -f "$WORK/bookworm.stats" ]] || "$LSB" calibrate "$MODEL" --text "$CALIB" -o "$WORK/bookworm.stats" -t "$THREADS"
for t in $TARGETS; do
  f="$WORK/bw_$t.lsb"
  if [[ ! -f "$f" ]]; then
    echo "== compress --target-bpw $t"
    /usr/bin/time -v "$LSB" compress "$MODEL" --target-bpw "$t" --calib "$WORK/bookworm.stats" --sens-text "$CALIB" \
      -o "$f" -t "$THREADS" > "$WORK/bw_$t.log" 2> "$WORK/bw_$t.time"
  fi
  if [[ ! -f "$WORK/bw_$t.eval.json" ]]; then
    echo "== eval $f"
    "$LSB" eval "$f" --ref "$MODEL" --text "$VALID" --ctx 512 --chunks "$CHUNKS" --json -t "$THREADS" \
      > "$WORK/bw_$t.eval.json"
  fi
done

python3 - "$WORK" $TARGETS <<'PY'
import json, os, sys
work, targets = sys.argv[1], sys.argv[2:]
# llama.cpp on the same model and text (issue 11: its converter, llama-imatrix on
# bookworm_calib.txt, llama-quantize --pure, llama-perplexity --kl-divergence, whole file).
peer = [("IQ1_S", 1.63, 1.725, 34.0), ("IQ1_M", 1.81, 1.419, 39.0), ("IQ2_XXS", 2.13, 0.715, 53.7),
        ("IQ2_XS", 2.38, 0.516, 59.7), ("IQ2_S", 2.63, 0.336, 66.7), ("Q2_K", 3.50, 0.239, 72.6)]
rows = []
for t in targets:
    e = json.load(open(os.path.join(work, f"bw_{t}.eval.json")))
    size = os.path.getsize(os.path.join(work, f"bw_{t}.lsb"))
    bpw = size * 8 / 27269632
    rows.append((float(t), bpw, e["kld_mean"], e["kld_stderr"], 100 * e["top1_agreement"], e["ppl"], e["n_chunks"]))
lines = ["| target | whole-file bpw | mean KLD ± se | same top-1 | PPL | windows | llama.cpp nearest (bpw → KLD, top-1) |",
         "|---|---|---|---|---|---|---|"]
for t, bpw, kld, se, top1, ppl, n in rows:
    near = min(peer, key=lambda p: abs(p[1] - t))
    lines.append(f"| {t:.2f} | {bpw:.4f} | {kld:.4f} ± {se:.4f} | {top1:.1f} % | {ppl:.3f} | {n} | "
                 f"{near[0]} ({near[1]:.2f} → {near[2]:.3f}, {near[3]:.1f} %) |")
open(os.path.join(work, "curve.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# SVG: KLD (log scale) against bits per weight, ours and llama.cpp's.
import math
W, H, L, B, T, R = 640, 400, 70, 50, 20, 20
xs = [r[1] for r in rows] + [p[1] for p in peer]
ys = [r[2] for r in rows] + [p[2] for p in peer]
x0, x1 = min(xs) - 0.1, max(xs) + 0.1
y0, y1 = math.log10(min(ys)) - 0.1, math.log10(max(ys)) + 0.1
px = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
py = lambda y: T + (y1 - math.log10(y)) / (y1 - y0) * (H - T - B)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{(W+L)/2}" y="{H-12}" text-anchor="middle">whole-file bits per weight</text>',
       f'<text x="16" y="{(H-B+T)/2}" transform="rotate(-90 16 {(H-B+T)/2})" text-anchor="middle">mean KLD vs bf16 (log)</text>']
b = math.ceil(x0 * 4) / 4
while b <= x1:
    svg.append(f'<text x="{px(b):.1f}" y="{H-B+16}" text-anchor="middle">{b:.2f}</text>')
    b += 0.25
for v in (0.05, 0.1, 0.2, 0.5, 1, 2, 5):
    if y0 <= math.log10(v) <= y1:
        svg.append(f'<line x1="{L}" y1="{py(v):.1f}" x2="{W-R}" y2="{py(v):.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{L-6}" y="{py(v)+4:.1f}" text-anchor="end">{v}</text>')
def series(pts, color, labels=None):
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(pts))
    out = [f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>']
    for i, (x, y) in enumerate(pts):
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{color}"/>')
        if labels:
            out.append(f'<text x="{px(x)+6:.1f}" y="{py(y)-6:.1f}" fill="{color}">{labels[i]}</text>')
    return out
svg += series(sorted((r[1], r[2]) for r in rows), "#c0392b")
svg += series([(p[1], p[2]) for p in peer], "#2c3e50", [p[0] for p in peer])
svg.append(f'<text x="{W-R-150}" y="{T+14}" fill="#c0392b">lsb --target-bpw</text>')
svg.append(f'<text x="{W-R-150}" y="{T+30}" fill="#2c3e50">llama.cpp (issue 11)</text>')
svg.append("</svg>")
open(os.path.join(work, "curve.svg"), "w").write("\n".join(svg) + "\n")
PY
echo "wrote $WORK/curve.md and $WORK/curve.svg"
