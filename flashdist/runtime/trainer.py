"""``flashdist.Trainer``: Lightning's Trainer, plus the step plan and the ledger on every fit.

``__init__`` only composes: the launch topology (launching/topology.py), the strategy name
(strategies/names.py), and flashdist's callbacks (runtime/callbacks.py). Each ``fit`` makes a
:class:`~flashdist.runtime.fit_run.FitRun`, the one object that holds what the fit knows,
and builds flashdist's callbacks with it.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Checkpoint
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset

from flashdist.compat.lightning import distributed_sampler_injected, reinstall_after_lightning_signal_handlers, route_train_sampler
from flashdist.data.sampler import sampler_for_user_choice
from flashdist.errors import ConfigError
from flashdist.launching.checked import checked_for_children, take_checked, this_command
from flashdist.launching.topology import apply_launch_topology
from flashdist.runtime.async_checkpoint import install_async_checkpoints
from flashdist.runtime.callbacks import FitCallbacks
from flashdist.runtime.checkpoint import (
    init_process_group_for_restart,
    install_atomic_checkpoints,
    resolve_ckpt_path,
)
from flashdist.runtime.fit_run import FitRun, ResumeState
from flashdist.runtime.global_batch import apply_keep_global_batch
from flashdist.runtime.ledger import StepLedger
from flashdist.runtime.planning import data_parallel_size, plan_before_launch
from flashdist.runtime.preemption import finish_preempted_fit
from flashdist.runtime.resume import RESUME_POLICIES, ResumePolicy
from flashdist.compat.console import quiet_console
from flashdist.runtime.progress import default_progress_bar
from flashdist.runtime.said_once import said_once
from flashdist.strategies.checks import LaunchFacts, check_before_launch, check_precision, needs_step_plan
from flashdist.runtime.reshard import prepare_deepspeed_reshard, universal_path_for_load
from flashdist.strategies.names import resolve_strategy, runs_on_cpu

__all__ = ["RESUME_POLICIES", "ResumePolicy", "Trainer"]


class Trainer(pl.Trainer):
    """A ``lightning.Trainer`` whose fits plan their steps and prove the plan.

    ``strict_ledger=False`` turns a planned-vs-taken mismatch from an error into a warning.
    ``resume_policy`` says what a resume may do when the schedule's identity changed:
    ``"strict"`` (default) refuses; ``"keep_schedule"``, ``"rescale"`` or ``"keep_global_batch"`` adapt.
    ``trust_unverified_checkpoints=True`` loads an explicit ``ckpt_path`` that has no manifest
    (plain Lightning, an older flashdist), with a warning; ``"auto"`` never picks one.
    ``compile_optimizer=True`` (or a dict of ``torch.compile`` kwargs) compiles the optimizer's
    update; the LR then lives in a tensor the schedule writes in place, so it never recompiles
    (flashdist/optim/compiled.py).
    ``max_tokens`` is a step budget in tokens (packed language-model data; like ``max_steps``).
    ``async_checkpoint=True`` writes checkpoints in the background: training waits only while
    the state is copied (DDP, one process, FSDP2; DeepSpeed is refused), runtime/async_checkpoint.py.
    ``peak_flops`` (per device, FLOP/s) sets the MFU denominator where the device's is not known.
    A ``ConfigError`` under a launcher (torchrun, srun, Lightning's own) is raised by global rank 0
    only; the other ranks exit with status 2 and print nothing (runtime/said_once.py).

    Example:
        >>> trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
        >>> trainer.fit_run.plan  # doctest: +SKIP  (computed once fit() has a train loader)
        >>> trainer.ledger.optimizer_steps
        0
    """

    @said_once
    def __init__(
        self,
        *args: Any,
        strict_ledger: bool = True,
        resume_policy: ResumePolicy = "strict",
        trust_unverified_checkpoints: bool = False,
        num_nodes: int | Literal["auto"] = "auto",
        compile_optimizer: bool | dict[str, Any] = False,
        max_tokens: int | None = None,
        peak_flops: float | None = None,
        async_checkpoint: bool = False,
        **kwargs: Any,
    ):
        quiet_console()  # the dependencies' notes about flashdist's own use of them (compat/console.py), once per process
        # "auto" (typed here so LightningCLI accepts it from YAML): the launcher's node count, else 1.
        kwargs["num_nodes"] = num_nodes
        if resume_policy not in RESUME_POLICIES:
            raise ConfigError(f"resume_policy={resume_policy!r} is not known.", accepted=RESUME_POLICIES)
        self.resume_policy = resume_policy
        self.strict_ledger = strict_ledger
        self.peak_flops = peak_flops
        self.max_tokens = check_max_tokens(max_tokens, kwargs)
        if max_tokens is not None and kwargs.get("max_epochs") is None:
            kwargs["max_epochs"] = -1  # the token budget is the limit, not Lightning's 1000-epoch default
        self.trust_unverified_checkpoints = trust_unverified_checkpoints
        kwargs = apply_launch_topology(dict(kwargs))
        strategy = kwargs.get("strategy", "auto")
        self.strategy_name = strategy if isinstance(strategy, str) else type(strategy).__name__
        kwargs["strategy"] = resolve_strategy(strategy, kwargs.get("accelerator", "auto"))
        self.compile_optimizer = checked_compile_option(compile_optimizer, kwargs["strategy"])
        check_precision(kwargs["strategy"], kwargs.get("precision"), runs_on_cpu(kwargs.get("accelerator", "auto")))
        if not isinstance(async_checkpoint, bool):  # before Lightning builds anything
            raise ConfigError(f"async_checkpoint={async_checkpoint!r} must be True or False.", hint="async_checkpoint: true")
        user_callbacks = list(kwargs.pop("callbacks", None) or [])
        bar = default_progress_bar(user_callbacks, kwargs.get("enable_progress_bar"))  # Lightning's rich bar, v_num an integer
        super().__init__(*args, callbacks=list(user_callbacks) + ([bar] if bar else []), **kwargs)  # Lightning extends the list
        self.async_checkpoint = async_checkpoint
        if async_checkpoint:
            install_async_checkpoints(self)
        else:
            install_atomic_checkpoints(self)
        # The training loader keeps the user's order on every rank count (data/sampler.py), not Lightning's forced shuffle.
        # Built where Lightning prepares the loader: before it creates the first epoch's iterator.
        # (Named parameters, not **kwargs: flashdist's config check reads this __init__'s source, and
        # a **kwargs used here would read as Trainer's own, leaving every trainer key unchecked.)
        route_train_sampler(self, lambda loader, num_replicas, rank: self.fit_callbacks.resume.train_sampler(loader, num_replicas, rank))
        # Each fit's Preemption takes SIGTERM back the moment Lightning registers its own handler.
        reinstall_after_lightning_signal_handlers(self, lambda: self.fit_callbacks.preemption.install())
        # A ledger and callbacks exist before the first fit, as Lightning's do: placed after the
        # user's callbacks, before Lightning's own (progress bar: the plan prints before it opens)
        # and before every checkpoint callback (a preemption checkpoint comes first).
        first_lightning = next(
            (i for i, c in enumerate(self.callbacks) if not any(c is u for u in user_callbacks) or isinstance(c, Checkpoint)),
            len(self.callbacks),
        )
        self._new_fit_run(at=first_lightning)

    def _new_fit_run(self, at: int | None = None) -> None:
        """A fresh FitRun, and flashdist's callbacks built with it in the places of the previous fit's."""
        previous = self.fit_callbacks.in_order() if at is None else []
        self.fit_run = FitRun(self, self.strategy_name, self.strict_ledger, self.compile_optimizer,
                              resume=ResumeState(self.resume_policy),
                              trust_unverified_checkpoints=self.trust_unverified_checkpoints)
        # Every checkpoint this Trainer reads from now on (this fit's, or a later validate/test's)
        # is verified by this fit's trust; the previous fit's routing is replaced, not nested.
        self.fit_run.trust.install(self.strategy, then=universal_path_for_load)
        self.fit_callbacks = FitCallbacks.build(self.fit_run, peak_flops=self.peak_flops)
        own = self.fit_callbacks.in_order()
        for callback in own:
            skip_inherited_step_hooks(callback)
        if at is not None:
            self.callbacks[at:at] = own
            return
        places = [i for i, c in enumerate(self.callbacks) if any(c is p for p in previous)]
        for index, callback in zip(places, own, strict=True):
            self.callbacks[index] = callback

    @property
    def ledger(self) -> StepLedger:
        """The current fit's step ledger (its counts are ``fit_run.counts``)."""
        return self.fit_callbacks.ledger

    @said_once
    def fit(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's fit, plus ``ckpt_path="auto"`` (runtime/checkpoint.py) and preemption's exit.

        A preempted fit raises ``SystemExit(75)`` after its checkpoint (runtime/preemption.py).
        """
        self._new_fit_run()
        preemption = self.fit_callbacks.preemption
        preemption.arm()  # a SIGTERM/SIGUSR1 from here on ends in exit 75 (with a checkpoint if a step ran)
        command = this_command()
        try:
            # Skipped in a rank whose starter (rank 0 under Lightning's launcher, flashdist launch's
            # check) already checked this very command (launching/checked.py): once, before any rank.
            if not take_checked(os.environ, command):
                check_fit_before_launch(self, args[0] if args else kwargs.get("model"), fit_data(args, kwargs))
            if len(args) >= 5:
                args = (*args[:4], resolve_ckpt_path(self, args[4], self.fit_run.trust), *args[5:])
                ckpt_path = args[4]
            else:
                kwargs["ckpt_path"] = ckpt_path = resolve_ckpt_path(self, kwargs.get("ckpt_path"), self.fit_run.trust)
            loader = args[1] if len(args) >= 2 else kwargs.get("train_dataloaders")
            apply_keep_global_batch(self, self.fit_run.trust.chosen if ckpt_path else None, getattr(loader, "batch_size", None))
            prepare_deepspeed_reshard(self, ckpt_path)
            init_process_group_for_restart(self)
            with checked_for_children(os.environ, command):  # the ranks Lightning's launcher starts in it skip the checks
                super().fit(*args, **kwargs)
        except SystemExit:
            if preemption.received is None:
                raise
            self.fit_run.preemption.preempted = True  # stopped by the signal before a step boundary: still "try again"
        finally:
            preemption.disarm()
        finish_preempted_fit(self.fit_run)


def checked_compile_option(value: Any, strategy: Any) -> dict[str, Any] | None:
    """``compile_optimizer=`` as torch.compile kwargs (None: off), refused where the strategy owns the step."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from flashdist.optim.compiled import normalize_compile_option

    options = normalize_compile_option(value)
    if options is not None and isinstance(strategy, DeepSpeedStrategy):
        raise ConfigError(
            "compile_optimizer=True with a DeepSpeed strategy: DeepSpeed's engine runs its own optimizer step.",
            hint="drop compile_optimizer, or train with strategy='ddp' / 'fsdp'.",
        )
    return options


def check_fit_before_launch(trainer: Trainer, model: Any, data: Any) -> None:
    """Every check ``fit`` runs before Lightning starts a rank (``flashdist launch`` runs them before torchrun).

    In order of cost: the Task's own ``before_launch``; the strategy config; the DataModule's own
    ``before_launch`` (the language-model one tokenizes); then, when the strategy config has keys
    that need them, the same checks with the step plan and the loader's batch size, where the
    launching process can know them (``data``: the DataLoader or DataModule given to ``fit``).

    Example:
        >>> check_fit_before_launch(trainer, task, datamodule)  # doctest: +SKIP
    """
    task_before_launch = getattr(model, "before_launch", None)
    if callable(task_before_launch):  # a Task's own checks on the module as fit() got it (tasks/model.py)
        task_before_launch()
    check_strategy_before_launch(trainer, model)
    check_order_splits(trainer, data)
    datamodule_before_launch(trainer, model, data)
    if needs_step_plan(trainer.strategy):
        check_strategy_before_launch(trainer, model, data)


def check_order_splits(trainer: Trainer, data: Any) -> None:
    """A train DataLoader given to ``fit`` whose sampler cannot be split across the ranks is refused here, once."""
    if not isinstance(data, DataLoader) or isinstance(data.dataset, IterableDataset) or type(data.batch_sampler) is not BatchSampler:
        return
    if distributed_sampler_injected(trainer) and not isinstance(data.sampler, DistributedSampler):
        # Only whether it can be split (a length) is checked: the data-parallel size is not knowable
        # here for every strategy (FSDP2's device mesh exists once the processes do).
        sampler_for_user_choice(data.sampler, data.dataset, num_replicas=1, rank=0)


def check_strategy_before_launch(trainer: pl.Trainer, model: Any, data: Any = None) -> None:
    """The strategy-config checks of strategies/checks.py, in the launching process (one message, before any rank).

    With ``data`` (a DataLoader or DataModule), also the keys that need the step plan, when it can be known.
    """
    algorithm = trainer.gradient_clip_algorithm
    plannable = data is not None and needs_step_plan(trainer.strategy)
    plan, micro_batch_size = plan_before_launch(trainer, data) if plannable else (None, None)
    facts = LaunchFacts(
        precision=str(trainer.precision),
        gradient_clip_val=trainer.gradient_clip_val,
        gradient_clip_algorithm=getattr(algorithm, "value", algorithm),
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        task=model,
        plan=plan,
        micro_batch_size=micro_batch_size,
        data_parallel_size=data_parallel_size(trainer) if plannable else None,  # FSDP2's needs its device mesh
    )
    check_before_launch(trainer.strategy, facts)


def check_max_tokens(max_tokens: Any, kwargs: dict[str, Any]) -> int | None:
    if max_tokens is None:
        return None
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        max_tokens = int(max_tokens)  # 2.0e6 from YAML
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens={max_tokens!r} must be a positive int.", hint="max_tokens: 2000000")
    if kwargs.get("max_steps", -1) not in (-1, None):
        raise ConfigError(f"max_tokens={max_tokens} and max_steps={kwargs['max_steps']} were both given.",
                          hint="give the training budget one way: tokens or steps.")
    return max_tokens


def fit_data(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The DataModule or train loader(s) ``fit(*args, **kwargs)`` was given (None if neither)."""
    datamodule = kwargs.get("datamodule")
    if datamodule is None and len(args) >= 4:
        datamodule = args[3]
    if datamodule is not None:
        return datamodule
    return args[1] if len(args) >= 2 else kwargs.get("train_dataloaders")  # Lightning accepts a DataModule there too


def datamodule_before_launch(trainer: Trainer, model: Any, data: Any) -> None:
    """Let a DataModule check itself against the model (and prepare) before Lightning starts any rank.

    Duck-typed: a DataModule with ``before_launch(model, default_root_dir)`` (the language-model
    one) is called here, in the launching process, so its ConfigErrors come once, before launch.
    """
    datamodule = data if isinstance(data, pl.LightningDataModule) or hasattr(data, "before_launch") else None
    if trainer.max_tokens is not None and datamodule is not None and getattr(datamodule, "tokens_per_sample", 0) is None:
        raise ConfigError(
            f"trainer.max_tokens={trainer.max_tokens} is a token budget, but the data's samples hold varying numbers of tokens "
            "(packing is off), so it is no whole number of optimizer steps.",
            hint="set data.init_args.packing: true, or give the budget as trainer.max_steps.",
        )
    hook = getattr(datamodule, "before_launch", None)
    if callable(hook) and model is not None:
        hook(model, trainer.default_root_dir)


# Hooks Lightning calls on every callback at every training step.
_STEP_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)


def skip_inherited_step_hooks(callback: Callback) -> None:
    """Hide the per-step hooks a flashdist callback does not override from Lightning's dispatch.

    Lightning calls every hook of every callback at every step, inherited no-ops included,
    each inside a profiler context: measured at about 90 µs per step for flashdist's four
    callbacks (a cProfile of a fit). Its dispatch skips a hook that is not
    callable, so an instance attribute of None removes the call; overridden hooks are kept.
    """
    for name in _STEP_HOOKS:
        if getattr(type(callback), name) is getattr(Callback, name):
            setattr(callback, name, None)
