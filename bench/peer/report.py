#!/usr/bin/env python3
"""Tables (markdown) and plot (SVG) of a bench/compare.sh run.

    report.py WORK MODEL [synthetic]

Reads what compare.sh left in WORK and writes WORK/results.json, WORK/compare.md and
WORK/compare.svg; prints compare.md. Standard library only.
"""
import json
import math
import os
import re
import statistics
import struct
import sys

work, model = sys.argv[1], sys.argv[2]
synthetic = len(sys.argv) > 3 and sys.argv[3] == "synthetic"


def read(path):
    with open(os.path.join(work, path), encoding="utf-8") as f:
        return f.read()


def exists(path):
    return os.path.exists(os.path.join(work, path))


def tsv(path):
    return [l.split("\t") for l in read(path).splitlines() if l.strip()] if exists(path) else []


# ---- GGUF tensor table (names, element counts, bytes) -------------------------------------
def gguf_tensors(path):
    """[(name, numel, nbytes)] from a GGUF v2/v3 header; bytes from the gaps between offsets."""
    with open(path, "rb") as f:
        buf = f.read(64 << 20)  # the header of a GGUF file is far smaller than this
        size = os.fstat(f.fileno()).st_size
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = buf[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])

    assert buf[:4] == b"GGUF", path
    pos = 4
    take("I")  # version
    n_tensors, n_kv = take("Q"), take("Q")
    alignment = 32
    for _ in range(n_kv):
        k = string()
        v = value(take("I"))
        if k == "general.alignment":
            alignment = v
    infos = []
    for _ in range(n_tensors):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        take("I")  # type
        infos.append((name, math.prod(ne), take("Q")))
    data = (pos + alignment - 1) // alignment * alignment
    ends = sorted(o for _, _, o in infos)[1:] + [size - data]
    end_of = dict(zip(sorted(o for _, _, o in infos), ends))
    return [(n, numel, end_of[o] - o) for n, numel, o in infos]


# ---- collect ---------------------------------------------------------------------------------
peer = [dict(tool="llama.cpp", name=n, path=p, how="llama-quantize") for n, p in tsv("peer_files.tsv")]
ours = [dict(tool="lsb", name=n, path=p, how=h) for n, p, h in tsv("lsb_files.tsv")]
rows = peer + ours

n_params = None
for r in peer:
    tens = gguf_tensors(r["path"])
    n_params = n_params or sum(t[1] for t in tens)
    names = {t[0] for t in tens}
    # Weights read per decoded token: every tensor but the embedding table (a row lookup), unless
    # the embeddings are tied to the output.
    r["bytes_per_token"] = sum(t[2] for t in tens if t[0] != "token_embd.weight" or "output.weight" not in names)
for r in rows:
    r["bytes"] = os.path.getsize(r["path"])
if exists("kld/lsb_ref.json"):  # the original's own perplexity, from the check
    j = json.loads(read("kld/lsb_ref.json"))
    orig_ppl = (j["ppl"], j["ppl_stderr"])
else:
    orig_ppl = (None, None)

# KLD
for r in peer:
    p = f"kld/peer_{r['name']}.log"
    if not exists(p):
        continue
    log = read(p)

    def num(label):
        m = re.search(r"^" + re.escape(label) + r"\s*:?\s*([-0-9.]+)(?:\s*±\s*([0-9.]+))?", log, re.M)
        return (float(m.group(1)), float(m.group(2)) if m.group(2) else None) if m else (None, None)

    r["ppl"], r["ppl_err"] = num("Mean PPL(Q)")
    r["kld"], r["kld_err"] = num("Mean    KLD")
    r["top1"] = num("Same top p")[0]
for r in ours:
    p = f"kld/lsb_{r['name']}.json"
    if exists(p) and read(p).strip():  # empty while its run is still going
        j = json.loads(read(p))
        r.update(ppl=j["ppl"], ppl_err=j["ppl_stderr"], kld=j["kld_mean"], kld_err=j["kld_stderr"],
                 top1=100 * j["top1_agreement"])

# speed (files of one run, or of ROUNDS rounds with a suffix _rK: each figure is then the median
# of the rounds' medians, its range the extremes over the rounds)
speed_files = os.listdir(os.path.join(work, "speed")) if exists("speed") else []
threads = sorted({int(m.group(1)) for f in speed_files if (m := re.match(r"peer_t(\d+)(?:_r\d+)?\.json$", f))})
memcpy = {}
original = None


def stat(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def combine(stats):
    return {"median": statistics.median(s["median"] for s in stats), "min": min(s["min"] for s in stats),
            "max": max(s["max"] for s in stats)}


def add(r, t, test, st):
    r.setdefault("speed_rounds", {}).setdefault(t, {}).setdefault(test, []).append(st)


for t in threads:
    for f in sorted(x for x in speed_files if re.match(rf"peer_t{t}(?:_r\d+)?\.json$", x)):
        for e in json.loads(read(f"speed/{f}")):
            r = next(x for x in peer if os.path.realpath(x["path"]) == os.path.realpath(e["model_filename"]))
            test = f"pp{e['n_prompt']}" if e["n_gen"] == 0 else f"tg{e['n_gen']}"
            add(r, t, test, stat(e["samples_ts"]))
    lsb_prompts = sorted({int(m.group(1)) for f in speed_files if (m := re.match(rf"lsb_t{t}_p(\d+)(?:_r\d+)?\.json$", f))})
    for p in lsb_prompts:
        for f in sorted(x for x in speed_files if re.match(rf"lsb_t{t}_p{p}(?:_r\d+)?\.json$", x)):
            j = json.loads(read(f"speed/{f}"))
            memcpy.setdefault(t, []).append(j.get("memcpy_gb_per_s"))
            for m in j["models"]:
                if os.path.realpath(m["model"]) == os.path.realpath(model):
                    if original is None:
                        st = [os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors")]
                        original = dict(tool="lsb", name="original", path=model, how="Hugging Face folder (safetensors)",
                                        bytes=sum(os.path.getsize(f) for f in st) or None, ppl=orig_ppl[0], kld=0.0, top1=100.0)
                    r = original
                else:
                    r = next(x for x in ours if os.path.realpath(x["path"]) == os.path.realpath(m["model"]))
                add(r, t, f"pp{p}", m["prompt_tok_per_s"])
                if p == lsb_prompts[0]:  # decode of the first prompt length (later ones measure it again)
                    add(r, t, "tg64", m["decode_tok_per_s"])
                    r["bytes_per_token"] = m["weight_bytes_per_token"]
                    n_params = n_params or m["params"]
for r in rows + ([original] if original else []):
    for t, tests in r.pop("speed_rounds", {}).items():
        for test, stats in tests.items():
            r.setdefault("speed", {}).setdefault(t, {})[test] = combine(stats)
if original is not None:
    rows.append(original)
for r in rows:
    if r.get("bytes") and n_params:
        r["bpw"] = r["bytes"] * 8 / n_params
rows.sort(key=lambda r: (r.get("bpw") or 99, r["tool"]))

with open(os.path.join(work, "results.json"), "w", encoding="utf-8") as f:
    json.dump(dict(n_params=n_params, threads=threads, memcpy_gb_per_s=memcpy, rows=rows), f, indent=1)


# ---- markdown --------------------------------------------------------------------------------
def fmt(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def cell(s, nd=0):
    return "–" if not s else f"{s['median']:.{nd}f} [{s['min']:.{nd}f}–{s['max']:.{nd}f}]"


out = []
run = read("run.txt").strip().splitlines()
out += ["- " + l for l in run]
out.append("")
if exists("check.txt"):
    out.append("Our GGUF export read by llama.cpp (ctx 512):")
    out.append("")
    out += ["    " + l for l in read("check.txt").strip().splitlines()]
    out.append("")
label = "SYNTHETIC model (random weights): speed only" if synthetic else "KLD against the original"
out.append(f"Size and quality ({label}; whole-file bpw = file bytes × 8 / {n_params} parameters; "
           "llama.cpp: `llama-perplexity --kl-divergence`, lsb: `lsb eval --ref`, ctx 512):")
out.append("")
out.append("| tool | file | made by | bytes | bpw | PPL | mean KLD | same top-1 % |")
out.append("|---|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    out.append(f"| {r['tool']} | {r['name']} | {r['how']} | {r['bytes'] or '–'} | {fmt(r.get('bpw'))} | "
               f"{fmt(r.get('ppl'), 2)} | {fmt(r.get('kld'), 4)} | {fmt(r.get('top1'), 1)} |")
for t in threads:
    mc = [m for m in memcpy.get(t, []) if m]
    out.append("")
    rounds = len({m.group(1) for f in speed_files if (m := re.match(rf"peer_t{t}_r(\d+)\.json$", f))})
    over = (f"median of {rounds} rounds' medians [min–max over every repetition], the tools' blocks alternating"
            if rounds > 1 else "median [min–max] over the repetitions")
    out.append(f"Speed, {t} thread(s), tokens/s, {over} "
               f"(`llama-bench -p P -n 64`, `lsb bench --prompt-tokens P --decode-tokens 64`); "
               f"decode GB/s = weights read per token × median decode tokens/s"
               + (f"; memcpy (lsb bench) {', '.join(f'{m:.1f}' for m in mc)} GB/s" if mc else "") + ":")
    out.append("")
    pcols = sorted({int(k[2:]) for r in rows for k in r.get("speed", {}).get(t, {}) if k.startswith("pp")})
    out.append("| tool | file | bpw | " + " | ".join(f"prompt {p}" for p in pcols) +
               " | decode 64 | MB read / token | decode GB/s |")
    out.append("|---|---|---:|" + "---:|" * len(pcols) + "---:|---:|---:|")
    for r in rows:
        s = r.get("speed", {}).get(t)
        if not s:
            continue
        bpt = r.get("bytes_per_token")
        gbs = bpt * s["tg64"]["median"] / 1e9 if bpt and s.get("tg64") else None
        out.append(f"| {r['tool']} | {r['name']} | {fmt(r.get('bpw'))} | "
                   + "".join(f"{cell(s.get(f'pp{p}'))} | " for p in pcols)
                   + f"{cell(s.get('tg64'))} | {fmt(bpt / 1e6 if bpt else None, 2)} | {fmt(gbs, 2)} |")
if exists("speed/loads.tsv"):
    out.append("")
    out.append("Load averages (1/5/15 min) before → after each speed run:")
    out.append("")
    for tool, t, b, a in tsv("speed/loads.tsv"):
        out.append(f"- {tool}, {t} thread(s): {b} → {a}")
md = "\n".join(out) + "\n"
with open(os.path.join(work, "compare.md"), "w", encoding="utf-8") as f:
    f.write(md)
print(md)

# ---- SVG: bpw on x; KLD (log scale) left, decode tokens/s right ------------------------------
W, H, M = 480, 340, dict(l=62, r=16, t=34, b=46)
colors = {"llama.cpp": "#d62728", "lsb": "#1f77b4"}
dash = {0: "", 1: "5,3", 2: "2,2"}
pts = [r for r in rows if r.get("bpw") and r is not original]  # the 16-bit original would squash the x axis
xmin = min((r["bpw"] for r in pts), default=1)
xmax = max((r["bpw"] for r in pts), default=5)
xmin, xmax = math.floor(xmin * 2) / 2, math.ceil(xmax * 2) / 2 + 0.001


def panel(x0, title, ylabel, series, log):
    """series: [(tool, label, [(x, y, name)])]"""
    ys = [y for _, _, p in series for _, y, _ in p if y and y > 0]
    if not ys:
        return f'<text x="{x0 + W / 2}" y="{H / 2}" text-anchor="middle">{title}: no data</text>'
    lo, hi = min(ys), max(ys)
    if log:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        f = lambda y: (math.log10(y) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        ticks = [10 ** e * m for e in range(int(math.log10(lo)), int(math.log10(hi)) + 1) for m in (1, 2, 5)
                 if lo <= 10 ** e * m <= hi]
    else:
        lo, step = 0, 10 ** math.floor(math.log10(hi))
        step = step / 2 if hi / step < 4 else step
        hi = math.ceil(hi / step) * step
        f = lambda y: (y - lo) / (hi - lo)
        ticks = [i * step for i in range(int(hi / step) + 1)]
    pw, ph = W - M["l"] - M["r"], H - M["t"] - M["b"]
    X = lambda x: x0 + M["l"] + (x - xmin) / (xmax - xmin) * pw
    Y = lambda y: M["t"] + ph - f(y) * ph
    s = [f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-weight="bold">{title}</text>',
         f'<rect x="{x0 + M["l"]}" y="{M["t"]}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for v in ticks:
        s.append(f'<line x1="{x0 + M["l"]}" x2="{x0 + M["l"] + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>')
        s.append(f'<text x="{x0 + M["l"] - 4}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    x = xmin
    while x <= xmax:
        s.append(f'<text x="{X(x):.1f}" y="{M["t"] + ph + 16}" text-anchor="middle">{x:g}</text>')
        x += 0.5
    s.append(f'<text x="{x0 + M["l"] + pw / 2}" y="{H - 8}" text-anchor="middle">bits per weight (whole file)</text>')
    s.append(f'<text transform="translate({x0 + 14},{M["t"] + ph / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    for i, (tool, label, p) in enumerate(series):
        p = sorted((x, y, n) for x, y, n in p if y and y > 0)
        if not p:
            continue
        c = colors[tool]
        if len(p) > 1:
            d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y, _ in p)
            s.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-dasharray="{series_dash[label]}"/>')
        for x, y, n in p:
            mark = (f'<rect x="{X(x) - 3:.1f}" y="{Y(y) - 3:.1f}" width="6" height="6" fill="{c}"/>' if tool == "lsb"
                    else f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3.2" fill="{c}"/>')
            s.append(f'{mark}<title>{tool} {n}: {x:.3f} bpw, {y:.4g}</title>')
    ly = M["t"] + 12
    for tool, label, p in series:
        s.append(f'<line x1="{x0 + M["l"] + pw - 150}" x2="{x0 + M["l"] + pw - 126}" y1="{ly - 4}" y2="{ly - 4}" '
                 f'stroke="{colors[tool]}" stroke-dasharray="{series_dash[label]}"/>')
        s.append(f'<text x="{x0 + M["l"] + pw - 122}" y="{ly}">{label}</text>')
        ly += 14
    return "\n".join(s)


series_dash = {}
kld_series = []
for tool in ("llama.cpp", "lsb"):
    series_dash[tool] = ""
    kld_series.append((tool, tool, [(r["bpw"], r.get("kld"), r["name"]) for r in pts if r["tool"] == tool]))
tg_series = []
for i, t in enumerate(threads):
    for tool in ("llama.cpp", "lsb"):
        label = f"{tool}, {t} thread{'s' if t > 1 else ''}"
        series_dash[label] = dash[i % 3]
        tg_series.append((tool, label, [(r["bpw"], r.get("speed", {}).get(t, {}).get("tg64", {}).get("median"),
                                         r["name"]) for r in pts if r["tool"] == tool]))
title = "SYNTHETIC " if synthetic else ""
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{2 * W}" height="{H}" fill="white"/>',
       panel(0, f"{title}mean KLD vs original (lower is better)", "mean KLD (log scale)", kld_series, True)
       if not synthetic else f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">synthetic model: no KLD</text>',
       panel(W, f"{title}decode tokens/s (median, higher is better)", "tokens/s", tg_series, False),
       "</svg>"]
with open(os.path.join(work, "compare.svg"), "w", encoding="utf-8") as f:
    f.write("\n".join(svg) + "\n")
