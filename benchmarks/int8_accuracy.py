"""int8 against fp32 on a real test set: top-1/top-5 of a checkpoint, its fp32 ONNX export and its
int8 exports (static QDQ, dynamic), each measured by `alexnet eval` (issue 26).

    python benchmarks/int8_accuracy.py CKPT [CKPT ...] --data fashion-mnist --out DIR [--images 256]

Runs the real commands in subprocesses (``alexnet export --format onnx [--quantize int8 --mode M
--calibrate DATA --split train --images N]``, ``alexnet eval --split test --json``) and writes
DIR/int8_accuracy.json and DIR/int8_accuracy.md (rewritten after each row; a rerun skips the files it has).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAYS = (("checkpoint (torch, fp32)", None), ("ONNX fp32", []), ("ONNX int8 static", ["static"]), ("ONNX int8 dynamic", ["dynamic"]))


def alexnet(*argv: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "alexnet", *argv], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"alexnet {' '.join(argv)}: {done.stderr.strip()[-500:]}")
    return done.stdout


def model_file(ckpt: Path, way: list[str] | None, args) -> Path:
    """The file `alexnet eval` takes for ``way``: the checkpoint itself, or its export (made once)."""
    if way is None:
        return ckpt
    out = args.out / f"{ckpt.parent.parent.name}-{ckpt.stem}-{'-'.join(way) or 'fp32'}.onnx"
    if not out.exists():
        quantize = [] if not way else ["--quantize", "int8", "--mode", way[0], *(
            ["--calibrate", args.data, "--split", "train", "--images", str(args.images)] if way[0] == "static" else [])]
        alexnet("export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out), *quantize)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=int, default=256, help="calibration images for int8 static")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "int8_accuracy.json"
    rows = json.loads(record.read_text()) if record.exists() else []
    for ckpt in args.checkpoints:
        for label, way in WAYS:
            if any(r["checkpoint"] == str(ckpt) and r["way"] == label for r in rows):
                continue
            path = model_file(ckpt, way, args)
            scores = json.loads(alexnet("eval", "--checkpoint", str(path), "--data", args.data, "--split", "test",
                                        "--device", "cpu", "--json"))
            rows.append({"checkpoint": str(ckpt), "way": label, "file": path.name, "bytes": path.stat().st_size,
                         "top1": scores["top1_accuracy"], "top5": 1 - scores["top5_error"]})
            print(f"{ckpt} {label}: top-1 {rows[-1]['top1']:.4f}, top-5 {rows[-1]['top5']:.4f}", flush=True)
            record.write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| checkpoint | way | file size | top-1 | Δ top-1 vs fp32 (points) | top-5 |", "|---|---|---|---|---|---|"]
    for r in rows:
        base = next(b for b in rows if b["checkpoint"] == r["checkpoint"] and b["way"] == WAYS[0][0])
        lines.append(f"| `{r['checkpoint']}` | {r['way']} | {r['bytes'] / 1e6:.1f} MB | {r['top1'] * 100:.2f} % "
                     f"| {(r['top1'] - base['top1']) * 100:+.2f} | {r['top5'] * 100:.2f} % |")
    (args.out / "int8_accuracy.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
