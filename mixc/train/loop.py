"""The training loop: a recipe's phases, in order, on the curriculum loader.

    summary = train("recipes/smollm3-tiny.yaml", "shards", "runs/tiny")

Global step g (0-based here, printed 1-based) belongs to one phase; the loader hands this rank
its micro-batches of g, the phase's mix at the phase's sequence length. When a phase starts,
the model takes the phase's RoPE base (a long-context phase changes it outright, as SmolLM3
did). The learning rate of a step is `plan.lr_at` of the phase's run schedule at the step's
1-based position in its run, so a new run (a long-context extension) restarts its schedule.

Gradient accumulation. Every micro-batch's loss is its summed token cross-entropy divided by
the token count of the whole global batch (all micro-batches of all ranks), so the summed
gradients equal one big batch's mean-loss gradient, whatever the micro-batch size or the
number of ranks. DDP averages over ranks, hence the factor `world_size` on each rank's loss.

Checkpoints every `checkpoint_every` steps, at every phase end and at the last step trained:
model, optimizer, RNG states, every rank's loader position and the step, written atomically
(mixc/train/checkpoint.py), and only when the state is finite. A step with a NaN or infinite
loss or gradient norm is never applied; the recipe's `nonfinite` policy decides what follows
(mixc/train/guard.py). `resume=True` continues from the newest: the weights after the
last step equal an uninterrupted run's bit for bit (same world size and micro-batch size).
A checkpoint records what binds the run to its recipe and data (mixc/train/binding.py); a
resume that would change the past (another tokenizer, rebuilt sources, model, seed, a started
phase) is refused, and the settings it may change are applied with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import MixcError
from ..loader import CurriculumLoader, CurriculumStream
from ..plan import lr_at, plan_recipe
from ..shards.verify import check_store_for_training
from ..spec import load_recipe
from ..store import phase_manifest, source_token_counts
from ..streams import source_streams
from . import binding, checkpoint
from . import dist as distributed
from .guard import Guard, state_problem, step_problem
from .metrics import SUMMARY_FILE, MetricsLog, default_peak_flops, mfu, progress_line, summarize
from .model import SmolLM3, SmolLM3Config, document_start_loss_mask, get_config

CHECKPOINT_FORMAT = "mixc.checkpoint/1"
DEFAULT_MICRO_BATCH_TOKENS = 8192  # per rank per forward pass, when --micro-batch-size is not given

_print = functools.partial(print, flush=True)


def train(recipe_path: str | Path, shards: str | Path, out: str | Path, *, resume: bool = False,
          micro_batch_size: int | None = None, max_steps: int | None = None, checkpoint_every: int = 100,
          keep: int = 3, device: str = "cpu", attention: str = "sdpa", seed: int | None = None, fsdp: bool = False,
          threads: int | None = None, peak_flops: float | None = None, num_workers: int = 0, log_every: int = 1,
          verify_store: bool = False, log: Callable[[str], Any] = _print,
          on_step: Callable[[dict], Any] | None = None) -> dict[str, Any]:
    """Train a recipe on a shard store; returns the run summary (also written to out/summary.json).

    Under torchrun every process calls this; each trains on its slice of every global batch.
    `max_steps` stops after that many global steps of the curriculum (a checkpoint is written
    there); `verify_store` also reads every token file against its checksum before step 1 (the
    cheap checks of the store always run); `on_step(info)` is called on rank 0 after each step
    with the step's record and the model (tests use it to look inside).
    """
    if threads:
        torch.set_num_threads(threads)
    world = distributed.setup(device)
    try:
        return _train(Path(recipe_path), Path(shards), Path(out), world, resume=resume, micro_batch_size=micro_batch_size,
                      max_steps=max_steps, checkpoint_every=checkpoint_every, keep=keep, attention=attention, seed=seed,
                      fsdp=fsdp, peak_flops=peak_flops, num_workers=num_workers, log_every=log_every,
                      verify_store=verify_store, log=log if world.main else (lambda _msg: None), on_step=on_step)
    finally:
        distributed.teardown(world)


def _train(recipe_path: Path, store: Path, out: Path, world: distributed.World, *, resume, micro_batch_size, max_steps,
           checkpoint_every, keep, attention, seed, fsdp, peak_flops, num_workers, log_every, verify_store, log,
           on_step) -> dict:
    resolved = load_recipe(recipe_path)
    recipe = resolved.recipe
    plan = plan_recipe(resolved, source_token_counts(store, recipe.name))
    # What `mixc verify` would reject is refused before step 1 (cheap checks; the token files'
    # checksums only with verify_store). An id out of range is still caught batch by batch.
    check_store_for_training(store, recipe.name, [p.name for p in plan.phases], full=verify_store)
    streams = source_streams(store, plan)  # MixcError for a missing store or an unbuilt phase
    tokenizer = phase_manifest(store, recipe.name, plan.phases[0].name)["tokenizer"]
    data = binding.data_binding(store, plan)

    # Where to start: the newest checkpoint when resuming; never train over an existing run.
    ckpt_root = out / "checkpoints"
    found = checkpoint.latest(ckpt_root)
    state: dict[str, Any] | None = None
    meta: dict[str, Any] = {}
    if found and not resume:
        raise MixcError(f"{out} already holds checkpoints (newest {found.name}); pass --resume to continue it, or choose another --out")
    if found:
        # The newest checkpoint that loads and is finite; damaged ones are named and set aside.
        found, state, meta = checkpoint.load_newest(ckpt_root, warn=log, finite=True, set_aside=world.main)
        if meta.get("recipe_name") != recipe.name:
            raise MixcError(f"{found} is a checkpoint of recipe '{meta.get('recipe_name')}', not '{recipe.name}'")
        if seed is not None and seed != meta["seed"]:
            raise MixcError(f"{found} was trained with seed {meta['seed']}; resume without --seed or with the same one")
        seed = meta["seed"]
        # Refused changes (tokenizer, source contents, model, seed, ...) stop here; see binding.py.
        warnings = binding.resume_warnings(meta, recipe, plan, data, found)
        log(f"resuming from {found} (step {meta['step']}, phase {meta['phase']})")
        for line in warnings:
            log(line)
    elif resume:
        log(f"no checkpoint in {ckpt_root}; starting from step 0")
    seed = recipe.seed if seed is None else seed
    start_step = int(meta.get("step", 0))

    config = SmolLM3Config.from_dict(meta["model_config"]) if meta else _model_config(recipe.model, tokenizer)
    stream = CurriculumStream(plan, streams, seed=seed)
    total = stream.total_steps
    end = total if max_steps is None else max(0, min(max_steps, total))
    if micro_batch_size is None:
        micro_batch_size = max(1, DEFAULT_MICRO_BATCH_TOKENS // plan.phases[0].sequence_length)
    loader = CurriculumLoader(stream, micro_batch_size, world.rank, world.world_size, num_workers=num_workers)

    # The model: same init on every rank (same seed), then the checkpoint's weights if any.
    _seed_everything(seed)
    model = SmolLM3(config, attention=attention).to(world.device)
    if state is not None:
        model.load_state_dict(state["model"])
    engine = distributed.wrap(model, world, fsdp)
    opt = recipe.optimizer
    optimizer = model.configure_optimizer(lr=0.0, weight_decay=opt.weight_decay, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    if state is not None:
        settings = binding.optimizer_settings(optimizer)
        _load_optimizer(optimizer, model, state["optimizer"], fsdp)
        binding.restore_settings(optimizer, settings)  # the recipe's betas, eps, weight decay
        _restore_rng(state["rng"])
        saved = state["loader"]
        if len(saved) == world.world_size and meta.get("micro_batch_size") == micro_batch_size:
            loader.load_state_dict(saved[world.rank])
        else:
            # Another layout sees the same global batches; only the micro-batch split differs.
            loader.seek_step(start_step)
    params = model.num_parameters()
    peak = peak_flops or default_peak_flops(world.device)  # None: no MFU (a CPU, an unlisted GPU)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if world.device.type == "cuda" and not fsdp
                else contextlib.nullcontext())

    metrics = MetricsLog(out, resume_step=start_step) if world.main else None
    if world.main:
        (out / "run.json").write_text(json.dumps({
            "recipe": str(recipe_path), "shards": str(store), "model": recipe.model, "parameters": params,
            "world_size": world.world_size, "micro_batch_size": micro_batch_size, "seed": seed, "device": str(world.device),
            "threads": torch.get_num_threads(), "steps": total, "mixc_version": __version__}, indent=2) + "\n")
        log(f"{recipe.name}: model {recipe.model} ({params / 1e6:.2f}M parameters), {total} steps in {len(plan.phases)} phases, "
            f"{world.world_size} process(es) on {world.device}, {loader.batches.micro_per_step[0]} micro-batch(es) of "
            f"{loader.batches.micro_sizes[0]} per rank per step")

    batches = iter(loader)
    phase_index = None
    tokens_done = sum(min(max(start_step - stream.step_starts[i], 0), p.steps) * p.samples_per_step * p.sequence_length
                      for i, p in enumerate(plan.phases))
    started = time.perf_counter()
    session_tokens = 0
    last_checkpoint = found
    guard = Guard.from_recipe(recipe.nonfinite, meta)
    for step in range(start_step, end):
        p, local = stream.locate(step)
        phase = plan.phases[p]
        if p != phase_index:
            model.set_rope_theta(phase.rope_theta)
            phase_index = p
            log(f"phase {phase.name} (run {phase.run}) from step {step + 1}: sequence length {phase.sequence_length}, "
                f"RoPE base {phase.rope_theta:g}, {phase.samples_per_step} samples per step")
        run_step = phase.first_step + local
        lr = float(lr_at(phase.schedule, run_step))
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        n_micro = loader.batches.micro_per_step[p]
        global_tokens = phase.samples_per_step * phase.sequence_length
        loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
        step_batches = (next(batches) for _ in range(n_micro))
        masks: list[torch.Tensor | None] = [None] * n_micro
        counted_labels = global_tokens
        if recipe.mask_document_starts:
            # The loss is the mean over the labels that count in the whole global batch, so
            # every micro-batch of every rank needs the global count first.
            step_batches = list(step_batches)
            masks = [document_start_loss_mask(b["input_ids"], model.config.eos_token_id) for b in step_batches]
            local = torch.tensor(float(sum(int(mk.sum()) for mk in masks)), dtype=torch.float64, device=world.device)
            counted_labels = max(1, int(distributed.sum_across(local, world)))
        for m, batch in enumerate(step_batches):
            if (batch["step"], batch["micro"]) != (step, m):
                raise RuntimeError(f"loader out of order: got step {batch['step']} micro {batch['micro']}, expected {step} {m}")
            loss_sum += micro_step(engine, batch, counted_labels, world, autocast, opt.z_loss, sync=m == n_micro - 1,
                                   loss_mask=masks[m])
        max_norm = opt.grad_clip if opt.grad_clip > 0 else math.inf
        # The norm is measured before any update: a non-finite one (or loss) is never applied.
        grad_norm = float(_full(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
        loss = float(distributed.sum_across(loss_sum, world))
        problem = step_problem(loss, grad_norm)
        if problem is None:
            optimizer.step()
            guard.passed()
        optimizer.zero_grad(set_to_none=True)
        step_time = time.perf_counter() - t0
        tokens_done += global_tokens
        session_tokens += global_tokens
        done = step + 1
        skipped = None
        if problem is not None:
            skipped = _drop_step(guard, done, problem, f"phase {phase.name}", last_checkpoint, model, optimizer, fsdp,
                                 metrics, log)
        if world.main:
            tps = global_tokens / step_time
            record = {"step": step + 1, "phase": phase.name, "phase_index": p, "run": phase.run, "run_step": run_step,
                      "loss": _finite_or_none(loss), "lr": lr, "grad_norm": _finite_or_none(grad_norm), "tokens": tokens_done,
                      "tokens_per_s": tps, "mfu": mfu(params, tps, peak * world.world_size if peak else None),
                      "step_time": step_time, "elapsed": time.perf_counter() - started,
                      "sequence_length": phase.sequence_length, "rope_theta": model.config.rope_theta}
            if skipped:
                record["skipped"] = skipped
            metrics.write(record)
            if skipped or (log_every and ((step + 1) % log_every == 0 or step + 1 == end)):
                log(progress_line(record, total))
            if on_step is not None:
                on_step({"record": record, "model": model, "batch": batch})
        phase_end = done == stream.step_starts[p + 1]
        if done == end or phase_end or (checkpoint_every and done % checkpoint_every == 0):
            _check_state(guard, done, f"phase {phase.name}", last_checkpoint, model, optimizer, fsdp, world, metrics, log)
            last_checkpoint = _save(ckpt_root, keep, done, model, optimizer, loader, world, fsdp, meta={
                "format": CHECKPOINT_FORMAT, "recipe": str(recipe_path), "recipe_name": recipe.name, "plan_digest": plan_digest(plan, data), "model": recipe.model,
                "model_config": model.config.to_dict(), "step": done, "total_steps": total, "phase": phase.name,
                "phase_index": p, "phase_complete": phase_end, "run": phase.run, "run_step": run_step, "tokens": tokens_done,
                "loss": _finite_or_none(loss), "seed": seed, "world_size": world.world_size, "micro_batch_size": micro_batch_size,
                "tokenizer": tokenizer, "shards": str(store), "mixc_version": __version__,
                "binding": binding.run_binding(recipe, data), **guard.meta()})
    train_seconds = time.perf_counter() - started
    summary: dict[str, Any] = {}
    if world.main:
        metrics.close()
        summary = summarize(metrics.records, [
            {"name": p.name, "run": p.run, "steps": p.steps, "first_step": stream.step_starts[i] + 1,
             "last_step": stream.step_starts[i + 1], "sequence_length": p.sequence_length, "rope_theta": p.rope_theta}
            for i, p in enumerate(plan.phases)],
            recipe=recipe.name, model=recipe.model, parameters=params, total_steps=total, train_seconds=train_seconds,
            session_tokens=session_tokens, session_steps=max(0, end - start_step),
            checkpoint=str(last_checkpoint) if last_checkpoint else None)
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


plan_digest = binding.plan_digest  # a digest of the plan's numbers and each source's store key, size and checksums


def micro_step(engine: torch.nn.Module, batch: dict, global_tokens: int, world: distributed.World,
               autocast, z_loss: float = 0.0, sync: bool = True, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Forward and backward of one micro-batch; returns its share of the global batch's mean loss.

    `global_tokens` is the number of labels that count in the whole global batch. The gradient
    added to `.grad` is this micro-batch's share: summed over every micro-batch of every rank
    it is the global batch's mean-loss gradient."""
    input_ids = batch["input_ids"].to(world.device, non_blocking=True)
    labels = batch["labels"].to(world.device, non_blocking=True)
    position_ids = batch["position_ids"].to(world.device, non_blocking=True)
    if loss_mask is not None:
        loss_mask = loss_mask.to(world.device, non_blocking=True)
    counted = labels.numel() if loss_mask is None else int(loss_mask.sum())
    if counted == 0:
        loss_mask = None  # nothing counts here; a zero share still runs backward (DDP needs every rank)
    with distributed.sync_gradients(engine, sync):
        with autocast:
            _, loss = engine(input_ids, position_ids=position_ids, labels=labels, loss_mask=loss_mask, z_loss=z_loss,
                             return_logits=False)
        share = loss * (counted / global_tokens)
        # DDP averages gradients over ranks; each rank's share is of the global batch, so undo it.
        (share * world.world_size).backward()
    return share.detach().double()


def _drop_step(guard: Guard, done: int, problem: str, where: str, last_good: Path | None, model, optimizer, fsdp: bool,
               metrics: MetricsLog | None, log) -> str:
    """Step `done` (1-based) was not applied: skip its batch or roll back, as the policy says
    (or a MixcError that stops the run). Returns the reason recorded in metrics.jsonl."""
    if guard.decide(done, problem, where, last_good) == "skip":
        guard.record_skip(range(done, done + 1))
        return f"{problem}; batch skipped" + ("" if guard.policy == "skip" else " (no checkpoint to roll back to yet)")
    back = _rollback(last_good, model, optimizer, fsdp)
    guard.record_rollback(range(back + 1, done + 1))
    dropped = f"batch {done}" if back + 1 == done else f"batches {back + 1}-{done}"
    reason = f"{problem} at step {done}; rolled back to step {back}, {dropped} skipped"
    if metrics is not None:
        metrics.mark_skipped(range(back + 1, done), reason)
    log(f"warning: step {done}: {reason}")
    return reason


def _check_state(guard: Guard, done: int, where: str, last_good: Path | None, model, optimizer, fsdp: bool,
                 world: distributed.World, metrics: MetricsLog | None, log) -> None:
    """Before a checkpoint: a finite state, or a rollback (policy rollback), or a MixcError."""
    bad = state_problem(model, optimizer)
    flag = torch.tensor(0.0 if bad is None else 1.0, device=world.device)
    if not float(distributed.sum_across(flag, world)):
        return
    bad = bad or "non-finite values on another rank"
    if guard.policy == "rollback" and last_good is not None and guard.rollbacks < guard.limit:
        reason = _drop_step(guard, done, f"the state holds {bad}", where, last_good, model, optimizer, fsdp, metrics, log)
        if metrics is not None and metrics.records and metrics.records[-1]["step"] == done:
            metrics.mark_skipped(range(done, done + 1), reason)
        return
    good = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
    raise MixcError(f"step {done} ({where}): the model or optimizer state holds {bad}; checkpoint not written, "
                    f"stopping; {good}; lower the learning rate or check the data")


def _rollback(path: Path, model, optimizer, fsdp: bool) -> int:
    """Weights, optimizer and RNG of checkpoint `path` (the loader stays where it is); its step."""
    state, meta = checkpoint.load(path)
    _load_model(model, state["model"], fsdp)
    _load_optimizer(optimizer, model, state["optimizer"], fsdp)
    _restore_rng(state["rng"])
    return int(meta["step"])


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN or infinity


def _model_config(name: str, tokenizer: dict) -> SmolLM3Config:
    config = get_config(name)  # MixcError for an unknown model
    vocab = int(tokenizer["vocab_size"])
    if vocab > config.vocab_size:
        raise MixcError(f"the shards' tokenizer '{tokenizer.get('name')}' has {vocab} tokens, more than model "
                        f"'{name}' embeds ({config.vocab_size}); use a model with a larger vocabulary")
    # The EOS id generation stops at is the tokenizer's, whatever the named config assumed.
    config.eos_token_id = int(tokenizer["eos_id"])
    return config


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (possibly FSDP2-sharded) DTensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _state_dicts(model, optimizer, fsdp: bool) -> tuple[dict, dict]:
    if not fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def _load_model(model, weights: dict, fsdp: bool) -> None:
    if not fsdp:
        model.load_state_dict(weights)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def _load_optimizer(optimizer, model, state: dict, fsdp: bool) -> None:
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _save(root: Path, keep: int, step: int, model, optimizer, loader, world, fsdp: bool, meta: dict) -> Path | None:
    """Every rank contributes its loader position; rank 0 writes the checkpoint."""
    loader_states = distributed.gather_objects(loader.state_dict(), world)
    model_state, optimizer_state = _state_dicts(model, optimizer, fsdp)
    path = None
    if world.main:
        state = {"model": model_state, "optimizer": optimizer_state, "step": step, "rng": _rng_state(), "loader": loader_states}
        path = checkpoint.save(root, step, state, meta, keep=keep)
    if world.distributed:
        torch.distributed.barrier()  # nobody runs ahead of (or exits before) a checkpoint being written
    return path
