"""Copy a trained adapter into the package (``src/adasr/adapters/<name>/``) so that it runs
without a download: ``adasr run --model <name>``, listed by ``adasr models``.

    python tools/ship_adapter.py runs/sft_gsm8k_qwen_distill/final --name qwen2.5-coder-0.5b-gsm8k-stream \
        --heldout gsm8k=runs/eval_gsm8k/sft-stream/adaptive/summary.json --heldout-note "..."

The LoRA weights are stored in bfloat16 (half the float32 size; PEFT casts them to the model's
dtype when it loads them), ``adapter_config.json``, ``adasr_meta.json`` and the model card are
copied, and each held-out result (``--heldout LABEL=SUMMARY``, repeatable: an ``adasr eval``
``summary.json``, whose proactive block, if any, adds the timely-correct and premature rates) is
written into the metadata's ``heldout_results`` list, which ``adasr models`` shows. Refuses an
adapter larger than ``--max-mb``.
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
    ap.add_argument("--heldout", action="append", default=[], metavar="LABEL=SUMMARY",
                    help="a label and the summary.json of a held-out adasr eval (repeatable)")
    ap.add_argument("--heldout-note", default="", help="what the held-out data and settings were")
    ap.add_argument("--max-mb", type=float, default=20.0)
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import load_file, save_file

    src = args.adapter
    heldout = []
    for item in args.heldout:
        label, sep, path = item.partition("=")
        if not sep or not label or not Path(path).is_file():
            sys.exit(f"error: --heldout {item!r}: pass LABEL=path/to/summary.json (an adasr eval summary)")
        heldout.append((label, Path(path)))
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
    if heldout:
        meta["heldout_note"] = args.heldout_note
        meta["heldout_results"] = [heldout_entry(label, json.loads(path.read_text())) for label, path in heldout]
    (dst / "adasr_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"shipped {src} as {dst.relative_to(REPO)} ({size_mb:.1f} MB)")


def heldout_entry(label: str, summary: dict) -> dict:
    """One ``heldout_results`` entry from an ``adasr eval`` summary: its accuracy, latency and
    token figures, and for a proactive evaluation the rates of
    :func:`adasr.proactive_metrics.summarize_proactive` (timely-correct, premature, answered before
    end of input, response delay in chunks)."""
    entry = {"label": label}
    for key in ("count", "mode", "accuracy", "accuracy_ci95", "format_rate", "p50_post_input_latency_s",
                "mean_stream_tokens", "mean_deep_tokens"):
        entry[key] = summary.get(key)
    proactive = summary.get("proactive") or {}
    for key in ("timely_correct_rate", "premature_rate", "answered_before_eoi_rate", "revised_rate",
                "p50_response_delay_chunks"):
        if key in proactive:
            entry[key] = proactive[key]
    return entry


if __name__ == "__main__":
    main()
