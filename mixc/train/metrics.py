"""What a training run tells its user: a progress line per step, metrics.jsonl, TensorBoard, a summary.

One record per optimizer step (global step, 1-based), written by rank 0:
    {"step", "phase", "phase_index", "run", "run_step", "loss", "lr", "grad_norm", "tokens",
     "tokens_per_s", "mfu", "step_time", "elapsed", "sequence_length", "rope_theta"}
`tokens` is the cumulative number of input tokens trained on, over all ranks. On resume the
file is cut back to the checkpoint's step, so it always describes one uninterrupted history.
`mfu` is null when no peak FLOP/s is known for the device (any CPU, an unlisted GPU) and none
was given.

MFU counts the FLOPs a step needs, forward and backward (PaLM, appendix B), per token:

    6 N  +  12 L d c

N parameters (the tied embedding once: its lookup is free, its output projection is 2 V h per
token forward, so 6N is the matmul work), L layers, d = heads x head dim, and c the mean number
of keys a token attends. The score and value products cost 2 d c each forward (4 d c), backward
twice that. Attention is causal within a document, so a document of n tokens attends
n (n + 1) / 2 keys in all; c is that sum over the batch's documents (from cu_seqlens) over its
tokens; (T + 1) / 2 for unpacked rows of length T. PaLM's 12 L H Q T counts the full T x T square,
twice the causal work. A step whose update was not applied (mixc/train/guard.py) also has "skipped": the
reason; its "loss" and "grad_norm" are null when they were not finite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..store import write_atomic

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"

# Peak dense bf16 FLOP/s of the GPUs whose figure is known (vendor datasheets, without
# sparsity), matched against torch.cuda.get_device_name, most specific first. Nothing for
# CPUs: their peak depends on the model, clock and vector units, and a guess once showed
# MFU above 100%; give --peak-tflops to see MFU there.
GPU_PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12),
                  ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12),
                  ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12))


def default_peak_flops(device) -> float | None:
    """The peak FLOP/s assumed for one `device` (a torch.device), or None when unknown."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch  # heavy: the summary `mixc train` prints is rendered without it

    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(name: str) -> float | None:
    """The table's peak for a device name as torch.cuda.get_device_name gives it."""
    return next((peak for key, peak in GPU_PEAK_FLOPS if key in name), None)


def attention_context(cu_seqlens) -> int:
    """Keys attended in all, summed over the documents of a batch: n (n + 1) / 2 each."""
    n = np.diff(np.asarray(cu_seqlens, dtype=np.int64))
    return int((n * (n + 1) // 2).sum())


def attention_flops_per_token(layers: int, attention_width: int, mean_context: float) -> float:
    """12 L d c: the attention score and value products, forward and backward, per token."""
    return 12.0 * layers * attention_width * mean_context


def mfu(params: int, tokens_per_s: float, peak_flops: float | None, attention_flops: float = 0.0) -> float | None:
    """Model FLOPs utilization: (6 x params + attention FLOPs per token) x tokens/s over the
    peak; None without a peak."""
    return (6.0 * params + attention_flops) * tokens_per_s / peak_flops if peak_flops else None


def progress_line(r: dict[str, Any], total_steps: int) -> str:
    width = len(str(total_steps))
    head = f"step {r['step']:>{width}}/{total_steps} | {r['phase']} | "
    if r.get("skipped"):
        return head + f"skipped: {r['skipped']}"
    util = f"MFU {100 * r['mfu']:.1f}% | " if r.get("mfu") is not None else ""
    return (head + f"loss {r['loss']:.4f} | lr {r['lr']:.2e} | grad {r['grad_norm']:.3f} | "
            f"{r['tokens_per_s']:,.0f} tok/s | {util}{r['step_time'] * 1000:.0f} ms")


class MetricsLog:
    """metrics.jsonl (append, one line per step) and, when installed, TensorBoard scalars."""

    def __init__(self, out: Path, resume_step: int | None = None):
        self.path = Path(out) / METRICS_FILE
        self.records: list[dict[str, Any]] = []
        if resume_step is not None and self.path.exists():
            # Keep the history up to the checkpoint; steps after it are trained again.
            for line in self.path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line torn by the kill that interrupted the run
                if isinstance(r, dict) and r.get("step", resume_step + 1) <= resume_step:
                    self.records.append(r)
        # Rewritten atomically: the kept history is never lost to a second kill.
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._file = open(self.path, "a")
        self._tb = _tensorboard(Path(out) / "tensorboard")

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "rope_theta", "sequence_length"):
                if record.get(key) is not None:
                    self._tb.add_scalar(f"train/{key}", record[key], record["step"])

    def mark_skipped(self, steps: range, reason: str) -> None:
        """Mark steps already written as undone (a rollback dropped their updates), in place."""
        for r in self.records:
            if r["step"] in steps:
                r["skipped"] = reason
        self._file.close()
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._file = open(self.path, "a")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder))


def summarize(records: list[dict[str, Any]], phases: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """First and last loss of each phase (of the steps trained so far, skipped ones left out), tokens, time."""
    skipped = [r["step"] for r in records if r.get("skipped")]
    tokens = records[-1].get("tokens", 0) if records else 0
    records = [r for r in records if not r.get("skipped")]
    out_phases = []
    for p in phases:
        rs = [r for r in records if r["phase"] == p["name"]]
        out_phases.append({**p, "steps_done": len(rs),
                           "loss_first": rs[0]["loss"] if rs else None,
                           "loss_last": rs[-1]["loss"] if rs else None,
                           "loss_min": min(r["loss"] for r in rs) if rs else None})
    last = records[-1] if records else {}
    return {"steps": max(last.get("step", 0), skipped[-1] if skipped else 0), "tokens": tokens,
            "loss_first": records[0]["loss"] if records else None, "loss_last": last.get("loss"),
            "skipped_steps": skipped, "phases": out_phases, **extra}


def render_summary(s: dict[str, Any]) -> str:
    def loss(v):
        return "-" if v is None or not math.isfinite(v) else f"{v:.4f}"

    lines = [f"{'phase':<20} {'steps':>11} {'seq':>6} {'loss first':>11} {'loss last':>10}"]
    for p in s["phases"]:
        steps = f"{p['steps_done']}/{p['steps']}"
        lines.append(f"{p['name']:<20} {steps:>11} {p['sequence_length']:>6} {loss(p['loss_first']):>11} {loss(p['loss_last']):>10}")
    time_s = s.get("train_seconds", 0.0)
    session = s.get("session_tokens", s["tokens"])
    lines.append(f"step {s['steps']}/{s.get('total_steps', s['steps'])}, {s['tokens']:,} tokens; this session "
                 f"{s.get('session_steps', s['steps'])} steps in {time_s:.1f} s ({session / time_s if time_s else 0:,.0f} tokens/s); "
                 f"loss {loss(s['loss_first'])} -> {loss(s['loss_last'])}")
    if s.get("skipped_steps"):
        lines.append(f"skipped {len(s['skipped_steps'])} step(s) with a non-finite loss or gradient norm: "
                     + ", ".join(map(str, s["skipped_steps"])))
    if s.get("checkpoint"):
        lines.append(f"latest checkpoint: {s['checkpoint']}")
    return "\n".join(lines)
