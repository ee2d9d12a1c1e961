"""Copy a trained adapter into the package (``src/adasr/adapters/<name>/``) so that it runs
without a download: ``adasr run --model <name>``, listed by ``adasr models``.

    python tools/ship_adapter.py runs/sft_gsm8k_qwen_distill/final --name qwen2.5-coder-0.5b-gsm8k-stream \
        --heldout runs/eval_gsm8k/sft-stream/adaptive/summary.json --heldout-note "..."

The LoRA weights are stored in bfloat16 (half the float32 size; PEFT casts them to the model's
dtype when it loads them), ``adapter_config.json``, ``adasr_meta.json`` and the model card are
copied, and the held-out result (an ``adasr eval`` summary) is written into the metadata as
``heldout_result``. Refuses an adapter larger than ``--max-mb``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapter", type=Path, help="a trained adapter directory (runs/.../final)")
    ap.add_argument("--name", required=True, help="the bundled name")
    ap.add_argument("--heldout", type=Path, help="summary.json of its held-out adasr eval")
    ap.add_argument("--heldout-note", default="", help="what the held-out data and settings were")
    ap.add_argument("--max-mb", type=float, default=20.0)
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import load_file, save_file

    src = args.adapter
    for f in ("adapter_config.json", "adapter_model.safetensors", "adasr_meta.json"):
        if not (src / f).is_file():
            sys.exit(f"error: {src} has no {f}: pass a trained adapter directory")
    dst = REPO / "src" / "adasr" / "adapters" / args.name
    dst.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(src / "adapter_model.safetensors").items()}
    save_file(weights, dst / "adapter_model.safetensors", metadata={"format": "pt"})
    size_mb = (dst / "adapter_model.safetensors").stat().st_size / 1e6
    if size_mb > args.max_mb:
        shutil.rmtree(dst)
        sys.exit(f"error: the adapter is {size_mb:.1f} MB in bfloat16, over --max-mb {args.max_mb}")
    shutil.copy(src / "adapter_config.json", dst / "adapter_config.json")
    if (src / "README.md").is_file():
        shutil.copy(src / "README.md", dst / "README.md")
    meta = json.loads((src / "adasr_meta.json").read_text())
    if args.heldout:
        s = json.loads(args.heldout.read_text())
        meta["heldout_result"] = {
            "data": args.heldout_note, "count": s.get("count"), "mode": s.get("mode"),
            "accuracy": s.get("accuracy"), "accuracy_ci95": s.get("accuracy_ci95"),
            "format_rate": s.get("format_rate"), "p50_post_input_latency_s": s.get("p50_post_input_latency_s"),
            "mean_stream_tokens": s.get("mean_stream_tokens"), "mean_deep_tokens": s.get("mean_deep_tokens"),
        }
    (dst / "adasr_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"shipped {src} as {dst.relative_to(REPO)} ({size_mb:.1f} MB)")


if __name__ == "__main__":
    main()
