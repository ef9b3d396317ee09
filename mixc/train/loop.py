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

The run is a `Trainer`: `setup` (recipe, plan, store checks, resume), then `train_step` per
global step (micro-batches, the non-finite guard, the optimizer step), `_after_step` (metrics,
the per-step hooks in `Trainer.after_step`, the checkpoint policy), and `finish` (the summary).

Checkpoints every `checkpoint_every` steps, at every phase end and at the last step trained:
model, optimizer, RNG states, every rank's loader position, the guard and the step (gathered by
checkpoint.TrainState), written atomically (mixc/train/checkpoint.py), and only when the state
is finite; with `--fsdp` every rank writes its own shards (torch.distributed.checkpoint). A
step with a NaN or infinite loss or gradient norm is never applied; the recipe's `nonfinite`
policy decides what follows (mixc/train/guard.py). `resume=True` continues from the newest: the weights after the
last step equal an uninterrupted run's bit for bit (same world size and micro-batch size).
A checkpoint records what binds the run to its recipe and data (mixc/train/binding.py); a
resume that would change the past (another tokenizer, rebuilt sources, model, seed, a started
phase) is refused, and the settings it may change are applied with a warning.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import MixcError
from ..loader import CurriculumLoader, CurriculumStream, PackedPhaseStream, micro_batch_sizes
from ..plan import lr_at, plan_recipe
from ..shards.verify import check_store_for_training
from ..spec import load_recipe
from ..store import phase_manifest, source_token_counts
from ..streams import source_streams
from . import binding, checkpoint
from . import dist as distributed
from .guard import Guard, state_problem, step_problem
from .heldout_eval import HeldoutEval, heldout_summary
from .metrics import (
    SUMMARY_FILE,
    MetricsLog,
    attention_context,
    attention_flops_per_token,
    default_peak_flops,
    mfu,
    progress_line,
    summarize,
)
from .model import IGNORE_INDEX, SmolLM3, SmolLM3Config, document_start_loss_mask, get_config, resolve_attention

CHECKPOINT_FORMAT = "mixc.checkpoint/1"
DEFAULT_MICRO_BATCH_TOKENS = 8192  # per rank per forward pass, when --micro-batch-size is not given

_print = functools.partial(print, flush=True)


def train(recipe_path: str | Path, shards: str | Path, out: str | Path, *, resume: bool = False,
          micro_batch_size: int | None = None, max_steps: int | None = None, checkpoint_every: int = 100,
          keep: int = 3, device: str = "cpu", attention: str = "auto", seed: int | None = None, fsdp: bool = False,
          threads: int | None = None, peak_flops: float | None = None, num_workers: int = 0, log_every: int = 1,
          verify_store: bool = False, activation_checkpointing: bool | None = None, log: Callable[[str], Any] = _print,
          on_step: Callable[[dict], Any] | None = None, init_from: str | Path | None = None,
          compile: bool = False) -> dict[str, Any]:
    """Train a recipe on a shard store; returns the run summary (also written to out/summary.json).

    Under torchrun every process calls this; each trains on its slice of every global batch.
    `max_steps` stops after that many global steps of the curriculum (a checkpoint is written
    there); `verify_store` also reads every token file against its checksum before step 1 (the
    cheap checks of the store always run); `on_step(info)` is called on rank 0 after each step
    with the step's record and the model (tests use it to look inside). `compile` compiles each
    decoder layer's halves around its attention kernel (`SmolLM3.compile_blocks`).
    """
    if threads:
        torch.set_num_threads(threads)
    world = distributed.setup(device, fsdp)
    try:
        trainer = Trainer(Path(recipe_path), Path(shards), Path(out), world, resume=resume, micro_batch_size=micro_batch_size,
                          max_steps=max_steps, checkpoint_every=checkpoint_every, keep=keep, attention=attention, seed=seed,
                          fsdp=fsdp, peak_flops=peak_flops, num_workers=num_workers, log_every=log_every,
                          verify_store=verify_store, activation_checkpointing=activation_checkpointing,
                          log=log if world.main else (lambda _msg: None), on_step=on_step, init_from=init_from,
                          compile=compile)
        return trainer.run()
    finally:
        distributed.teardown(world)


class Trainer:
    """One training run on this rank. `run()` = `setup()`, then `train_step(step)` and
    `_after_step(record)` for every global step left, then `finish()`.

    `after_step` holds hooks called on every rank after each step, with the trainer and the
    step's record, before the checkpoint policy: the place for in-loop work such as an
    evaluation every N steps (every rank calls them, so they may use collectives)."""

    def __init__(self, recipe_path: Path, store: Path, out: Path, world: distributed.World, *, resume: bool,
                 micro_batch_size: int | None, max_steps: int | None, checkpoint_every: int, keep: int, attention: str,
                 seed: int | None, fsdp: bool, peak_flops: float | None, num_workers: int, log_every: int,
                 verify_store: bool, log: Callable[[str], Any], on_step: Callable[[dict], Any] | None,
                 activation_checkpointing: bool | None = None, init_from: str | Path | None = None, compile: bool = False):
        self.recipe_path, self.store, self.out, self.world = recipe_path, store, out, world
        self.resume, self.micro_batch_size, self.max_steps = resume, micro_batch_size, max_steps
        self.checkpoint_every, self.keep, self.attention, self.seed, self.fsdp = checkpoint_every, keep, attention, seed, fsdp
        self.peak_flops, self.num_workers, self.log_every = peak_flops, num_workers, log_every
        self.verify_store, self.log, self.on_step = verify_store, log, on_step
        self.activation_checkpointing = activation_checkpointing  # None: where a phase would not fit without it
        self.ckpt_root = out / "checkpoints"
        self.init_from = init_from  # a fresh run starts from these checkpoint weights (an annealed ablation)
        self.after_step: list[Callable[[Trainer, dict], Any]] = []
        self.compile = compile

    def run(self) -> dict[str, Any]:
        self.setup()
        for step in range(self.start_step, self.end):
            self._after_step(self.train_step(step))
        return self.finish()

    # -- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Recipe, plan and store checks; the checkpoint to resume from; model, optimizer, loader."""
        self._read_inputs()
        found, state, meta = self._find_checkpoint()
        self._build(state, meta)
        self.last_checkpoint = found
        self.phase_index: int | None = None
        self.tokens_done = sum(min(max(self.start_step - self.stream.step_starts[i], 0), p.steps) * p.samples_per_step
                               * p.sequence_length for i, p in enumerate(self.plan.phases))
        self.session_tokens = 0
        self.batches = iter(self.loader)
        evaluation = HeldoutEval.create(self)  # every eval_every steps and at phase ends, into the step's record
        if evaluation is not None:
            self.after_step.append(evaluation)
        self.started = time.perf_counter()

    def _read_inputs(self) -> None:
        resolved = load_recipe(self.recipe_path)
        self.recipe = recipe = resolved.recipe
        self.plan = plan = plan_recipe(resolved, source_token_counts(self.store, recipe.name))
        # What `mixc verify` would reject is refused before step 1 (cheap checks; the token files'
        # checksums only with verify_store). An id out of range is still caught batch by batch.
        check_store_for_training(self.store, recipe.name, [p.name for p in plan.phases], full=self.verify_store)
        self.streams = source_streams(self.store, plan)  # MixcError for a missing store or an unbuilt phase
        self.tokenizer = phase_manifest(self.store, recipe.name, plan.phases[0].name)["tokenizer"]
        self.data = binding.data_binding(self.store, plan)

    def _find_checkpoint(self) -> tuple[Path | None, dict[str, Any] | None, dict[str, Any]]:
        """Where to start: the newest checkpoint when resuming; never train over an existing run."""
        recipe, log, seed = self.recipe, self.log, self.seed
        found = checkpoint.latest(self.ckpt_root)
        state: dict[str, Any] | None = None
        meta: dict[str, Any] = {}
        if found and not self.resume:
            raise MixcError(f"{self.out} already holds checkpoints (newest {found.name}); pass --resume to continue it, "
                            "or choose another --out")
        if found:
            # The newest checkpoint that loads and is finite; damaged ones are named and set aside.
            found, state, meta = checkpoint.load_newest(self.ckpt_root, warn=log, finite=True, set_aside=self.world.main)
            if meta.get("recipe_name") != recipe.name:
                raise MixcError(f"{found} is a checkpoint of recipe '{meta.get('recipe_name')}', not '{recipe.name}'")
            if seed is not None and seed != meta["seed"]:
                raise MixcError(f"{found} was trained with seed {meta['seed']}; resume without --seed or with the same one")
            seed = meta["seed"]
            # Refused changes (tokenizer, source contents, model, seed, ...) stop here; see binding.py.
            warnings = binding.resume_warnings(meta, recipe, self.plan, self.data, found)
            log(f"resuming from {found} (step {meta['step']}, phase {meta['phase']})")
            for line in warnings:
                log(line)
        elif self.resume:
            log(f"no checkpoint in {self.ckpt_root}; starting from step 0")
        self.seed = recipe.seed if seed is None else seed
        self.start_step = int(meta.get("step", 0))
        return found, state, meta

    def _build(self, state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        recipe, plan, world = self.recipe, self.plan, self.world
        config = SmolLM3Config.from_dict(meta["model_config"]) if meta else _model_config(recipe.model, self.tokenizer)
        self.stream = stream = CurriculumStream(plan, self.streams, seed=self.seed)
        self.total = stream.total_steps
        self.end = self.total if self.max_steps is None else max(0, min(self.max_steps, self.total))
        micro_batch_size = micro_batch_sizes(plan, self.micro_batch_size, DEFAULT_MICRO_BATCH_TOKENS)  # one per phase
        self.micro_batch_size = micro_batch_size
        self.loader = CurriculumLoader(stream, micro_batch_size, world.rank, world.world_size, num_workers=self.num_workers)

        # The model: same init on every rank (same seed), then the checkpoint's state if any.
        checkpoint.seed_everything(self.seed)
        # "auto": varlen (flash) on a GPU that runs it, else compiled flex; SDPA on CPU. Named in the start-up line.
        compute_dtype = distributed.precision_policy(world.device.type, self.fsdp, world.world_size).compute_dtype
        self.attention_backend = resolve_attention(self.attention, world.device, compute_dtype, config.head_dim)
        self.model = SmolLM3.build(config, world.device, self.seed, attention=self.attention_backend)  # meta device, then init in place
        if state is None and self.init_from is not None:
            self._init_weights(config)
        if self.compile:  # before wrapping, as torchtitan does: FSDP and DDP see the compiled layers
            self.model.compile_blocks()
        self.engine = distributed.wrap(self.model, world, self.fsdp)
        opt = recipe.optimizer
        self.optimizer = self.model.configure_optimizer(lr=0.0, weight_decay=opt.weight_decay, betas=(opt.beta1, opt.beta2),
                                                        eps=opt.eps)
        self.guard = Guard.from_recipe(recipe.nonfinite, meta)
        self.state = checkpoint.TrainState(self.model, self.optimizer, self.loader, self.guard, world, sharded=self.fsdp,
                                           micro_batch_size=micro_batch_size, step=self.start_step)
        if state is not None:
            state.setdefault("micro_batch_size", meta.get("micro_batch_size"))  # a checkpoint from before it was kept
            self._restore(state)
        self.params = self.model.num_parameters()
        self.peak = self.peak_flops or default_peak_flops(world.device)  # None: no MFU (a CPU, an unlisted GPU)
        self.autocast = distributed.precision_policy(world.device.type, self.fsdp, world.world_size).autocast(world.device.type)
        self.metrics = MetricsLog(self.out, resume_step=self.start_step) if world.main else None
        if world.main:
            self._announce()

    def _init_weights(self, config: SmolLM3Config) -> None:
        """--init-from: another run's checkpoint weights; optimizer, schedule, data order and step start fresh."""
        found, state, meta = checkpoint.load_given(self.init_from, warn=self.log)
        # rope_theta is set by each phase as it starts: it is no part of the weights' shape
        if {**(meta.get("model_config") or {}), "rope_theta": None} != {**config.to_dict(), "rope_theta": None}:
            raise MixcError(f"{found} holds a model of another shape than recipe model '{self.recipe.model}' with this tokenizer")
        theirs, ours = (meta.get("tokenizer") or {}).get("fingerprint"), (self.tokenizer or {}).get("fingerprint")
        if theirs != ours:
            raise MixcError(f"{found} was trained with tokenizer {theirs}, this store has {ours}: token ids would mean other things")
        self.model.load_state_dict(checkpoint.load_model_weights(state, self.model.state_dict()))
        self.log(f"weights from {found} (step {meta['step']}); optimizer, schedule and data order start fresh")

    def _restore(self, state: dict[str, Any], parts: tuple[str, ...] = ("model", "optimizer", "rng", "loader", "guard",
                                                                           "step")) -> None:
        settings = binding.optimizer_settings(self.optimizer)
        self.state.load_state_dict(state, parts=parts)
        binding.restore_settings(self.optimizer, settings)  # the recipe's betas, eps, weight decay

    def _announce(self) -> None:
        recipe, world = self.recipe, self.world
        (self.out / "run.json").write_text(json.dumps({
            # Absolute: `mixc report RUN` and `mixc eval RUN` read them from any working directory.
            "recipe": str(self.recipe_path.resolve()), "shards": str(self.store.resolve()), "model": recipe.model, "parameters": self.params,
            "world_size": world.world_size, "micro_batch_size": self.micro_batch_size, "seed": self.seed,
            "device": str(world.device), "threads": torch.get_num_threads(), "steps": self.total,
            "attention": self.attention_backend, "compile": self.compile, "mixc_version": __version__}, indent=2) + "\n")
        self.log(f"{recipe.name}: model {recipe.model} ({self.params / 1e6:.2f}M parameters), {self.total} steps in "
                 f"{len(self.plan.phases)} phases, {world.world_size} process(es) on {world.device}, "
                 f"{self.loader.batches.micro_per_step[0]} micro-batch(es) of {self.loader.batches.micro_sizes[0]} "
                 f"per rank per step, attention {self.attention_backend}" + (" (auto)" if self.attention == "auto" else "")
                 + (", compiled layers" if self.compile else ""))

    # -- one step -------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, Any]:
        """Global step `step` (0-based): its micro-batches, the guard, the update; returns its record."""
        p, local = self.stream.locate(step)
        phase = self.plan.phases[p]
        self._enter_phase(p, step)
        run_step = phase.first_step + local
        lr = float(lr_at(phase.schedule, run_step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        global_tokens = phase.samples_per_step * phase.sequence_length
        loss_sum, self.last_batch, context = self._forward_backward(step, p, global_tokens)
        opt = self.recipe.optimizer
        max_norm = opt.grad_clip if opt.grad_clip > 0 else math.inf
        # The norm is measured before any update: a non-finite one (or loss) is never applied.
        grad_norm = float(_full(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)))
        loss = float(distributed.sum_across(loss_sum, self.world))
        problem = step_problem(loss, grad_norm)
        if problem is None:
            self.optimizer.step()
            self.guard.passed()
        self.optimizer.zero_grad(set_to_none=True)
        step_time = time.perf_counter() - t0
        self.tokens_done += global_tokens
        self.session_tokens += global_tokens
        self.state.step = done = step + 1
        skipped = None
        if problem is not None:
            skipped = self._drop_step(done, problem, f"phase {phase.name}")
        tps = global_tokens / step_time
        record = {"step": done, "phase": phase.name, "phase_index": p, "run": phase.run, "run_step": run_step,
                  "loss": _finite_or_none(loss), "lr": lr, "grad_norm": _finite_or_none(grad_norm),
                  "tokens": self.tokens_done, "tokens_per_s": tps,
                  "mfu": mfu(self.params, tps, self.peak * self.world.world_size if self.peak else None,
                             attention_flops_per_token(self.model.config.num_hidden_layers, self.model.config.hidden_size,
                                                       context)),
                  "step_time": step_time, "elapsed": time.perf_counter() - self.started,
                  "sequence_length": phase.sequence_length, "rope_theta": self.model.config.rope_theta}
        if skipped:
            record["skipped"] = skipped
        return record

    def _enter_phase(self, p: int, step: int) -> None:
        if p == self.phase_index:
            return
        phase = self.plan.phases[p]
        self.model.set_rope_theta(phase.rope_theta)
        self.phase_index = p
        flag = self.activation_checkpointing
        self.model.activation_checkpointing = flag if flag is not None else distributed.activation_checkpointing_for(
            self.model.config, phase.sequence_length, self.micro_batch_size[p], self.world, self.fsdp)
        self.log(f"phase {phase.name} (run {phase.run}) from step {step + 1}: sequence length {phase.sequence_length}, "
                 f"RoPE base {phase.rope_theta:g}, {phase.samples_per_step} samples per step"
                 + (", activation checkpointing" if self.model.activation_checkpointing else ""))

    def _forward_backward(self, step: int, p: int, global_tokens: int) -> tuple[torch.Tensor, dict, float]:
        """Every micro-batch of step `step` on this rank; (its summed loss share, the last batch, the
        mean number of keys a token attends, for MFU)."""
        world, model = self.world, self.model
        n_micro = self.loader.batches.micro_per_step[p]
        loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
        step_batches = (next(self.batches) for _ in range(n_micro))
        masks: list[torch.Tensor | None] = [None] * n_micro
        counted_labels = global_tokens
        packed = isinstance(self.stream.phases[p], PackedPhaseStream)
        if self.recipe.mask_document_starts or packed:
            # The loss is the mean over the labels that count in the whole global batch (not the
            # padding of a packed phase, not masked document starts), so every micro-batch of every
            # rank needs the global count first. A concat phase without masking counts every label.
            step_batches = list(step_batches)
            if self.recipe.mask_document_starts:
                masks = [document_start_loss_mask(b["input_ids"], model.config.eos_token_id) for b in step_batches]
            local = torch.tensor(float(sum(counted_in(b["labels"], mk) for b, mk in zip(step_batches, masks))),
                                 dtype=torch.float64, device=world.device)
            counted_labels = max(1, int(distributed.sum_across(local, world)))
        context = context_tokens = 0  # attention's mean context, from this rank's documents
        for m, batch in enumerate(step_batches):
            if not batch.get("padding"):
                context, context_tokens = context + attention_context(batch["cu_seqlens"]), context_tokens + batch["input_ids"].numel()
            if (batch["step"], batch["micro"]) != (step, m):
                raise RuntimeError(f"loader out of order: got step {batch['step']} micro {batch['micro']}, expected {step} {m}")
            loss_sum += micro_step(self.engine, batch, counted_labels, world, self.autocast, self.recipe.optimizer.z_loss,
                                   sync=m == n_micro - 1, loss_mask=masks[m])
        return loss_sum, batch, context / max(context_tokens, 1)

    def _after_step(self, record: dict[str, Any]) -> None:
        """The `after_step` hooks (they may add to the record), metrics and progress (rank 0), then
        the checkpoint policy."""
        for hook in self.after_step:
            hook(self, record)
        if self.world.main:
            self.metrics.write(record)
            step = record["step"]
            if record.get("skipped") or (self.log_every and (step % self.log_every == 0 or step == self.end)):
                self.log(progress_line(record, self.total))
            if self.on_step is not None:
                self.on_step({"record": record, "model": self.model, "batch": self.last_batch})
        phase_end = record["step"] == self.stream.step_starts[record["phase_index"] + 1]
        if self.should_checkpoint(record["step"], phase_end):
            self.save_checkpoint(record, phase_end)

    # -- checkpoints and the non-finite guard -----------------------------------------------

    def should_checkpoint(self, done: int, phase_end: bool) -> bool:
        """At the last step trained, at every phase end, and every `checkpoint_every` steps."""
        return done == self.end or phase_end or bool(self.checkpoint_every and done % self.checkpoint_every == 0)

    def save_checkpoint(self, record: dict[str, Any], phase_end: bool) -> None:
        """Check the state is finite (or roll back, or stop), then every rank saves its part."""
        done = record["step"]
        self._check_state(done, f"phase {record['phase']}")
        self.last_checkpoint = checkpoint.save_train_state(self.ckpt_root, done, self.state, self._meta(record, phase_end),
                                                           keep=self.keep)
        if self.world.distributed:
            torch.distributed.barrier()  # nobody runs ahead of (or exits before) a checkpoint being written

    def _meta(self, record: dict[str, Any], phase_end: bool) -> dict[str, Any]:
        """What meta.json says of checkpoint `record["step"]`: enough to resume, export or inspect it."""
        recipe, world = self.recipe, self.world
        return {
            "format": CHECKPOINT_FORMAT, "recipe": str(self.recipe_path), "recipe_name": recipe.name,
            "plan_digest": plan_digest(self.plan, self.data), "model": recipe.model,
            "model_config": self.model.config.to_dict(), "step": record["step"], "total_steps": self.total,
            "phase": record["phase"], "phase_index": record["phase_index"], "phase_complete": phase_end,
            "run": record["run"], "run_step": record["run_step"], "tokens": self.tokens_done, "loss": record["loss"],
            "seed": self.seed, "world_size": world.world_size, "micro_batch_size": self.micro_batch_size,
            "tokenizer": self.tokenizer, "shards": str(self.store), "mixc_version": __version__,
            "binding": binding.run_binding(recipe, self.data), **self.guard.meta()}

    def _drop_step(self, done: int, problem: str, where: str) -> str:
        """Step `done` (1-based) was not applied: skip its batch or roll back, as the policy says
        (or a MixcError that stops the run). Returns the reason recorded in metrics.jsonl."""
        guard, last_good = self.guard, self.last_checkpoint
        if guard.decide(done, problem, where, last_good) == "skip":
            guard.record_skip(range(done, done + 1))
            return f"{problem}; batch skipped" + ("" if guard.policy == "skip" else " (no checkpoint to roll back to yet)")
        back = self._rollback(last_good)
        guard.record_rollback(range(back + 1, done + 1))
        dropped = f"batch {done}" if back + 1 == done else f"batches {back + 1}-{done}"
        reason = f"{problem} at step {done}; rolled back to step {back}, {dropped} skipped"
        if self.metrics is not None:
            self.metrics.mark_skipped(range(back + 1, done), reason)
        self.log(f"warning: step {done}: {reason}")
        return reason

    def _check_state(self, done: int, where: str) -> None:
        """Before a checkpoint: a finite state, or a rollback (policy rollback), or a MixcError."""
        guard, last_good, metrics = self.guard, self.last_checkpoint, self.metrics
        bad = state_problem(self.model, self.optimizer)
        flag = torch.tensor(0.0 if bad is None else 1.0, device=self.world.device)
        if not float(distributed.sum_across(flag, self.world)):
            return
        bad = bad or "non-finite values on another rank"
        if guard.policy == "rollback" and last_good is not None and guard.rollbacks < guard.limit:
            reason = self._drop_step(done, f"the state holds {bad}", where)
            if metrics is not None and metrics.records and metrics.records[-1]["step"] == done:
                metrics.mark_skipped(range(done, done + 1), reason)
            return
        good = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        raise MixcError(f"step {done} ({where}): the model or optimizer state holds {bad}; checkpoint not written, "
                        f"stopping; {good}; lower the learning rate or check the data")

    def _rollback(self, path: Path) -> int:
        """Weights, optimizer and RNG of checkpoint `path` (the loader stays where it is); its step."""
        state, meta = checkpoint.load(path)
        self._restore(state, parts=("model", "optimizer", "rng"))
        return int(meta["step"])

    # -- the end ----------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """The run summary (rank 0; {} elsewhere), also written to out/summary.json."""
        train_seconds = time.perf_counter() - self.started
        if not self.world.main:
            return {}
        self.metrics.close()
        stream = self.stream
        phases = [{"name": p.name, "run": p.run, "steps": p.steps, "first_step": stream.step_starts[i] + 1,
                   "last_step": stream.step_starts[i + 1], "sequence_length": p.sequence_length, "rope_theta": p.rope_theta}
                  for i, p in enumerate(self.plan.phases)]
        summary = summarize(self.metrics.records, phases, recipe=self.recipe.name, model=self.recipe.model,
                            parameters=self.params, total_steps=self.total, train_seconds=train_seconds,
                            session_tokens=self.session_tokens, session_steps=max(0, self.end - self.start_step),
                            checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None)
        if (heldout := heldout_summary(self.metrics.records)) is not None:
            summary["heldout"] = heldout
        (self.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
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
    counted = counted_in(labels, loss_mask)
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


def counted_in(labels: torch.Tensor, loss_mask: torch.Tensor | None) -> int:
    """Labels that enter the loss: not IGNORE_INDEX (a packed sample's padding), and in the mask if any."""
    real = labels != IGNORE_INDEX
    return int((real if loss_mask is None else real & loss_mask.to(real.device).bool()).sum())


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


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (possibly FSDP2-sharded) DTensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
