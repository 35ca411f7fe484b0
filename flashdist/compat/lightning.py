"""Lightning internals flashdist relies on (lightning 2.6.x; tests/compat/test_lightning.py).

Each function names the internal it touches, why no public API serves, and has a test of
the same name in tests/compat/test_lightning.py.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flashdist.compat import CompatError

F = TypeVar("F", bound=Callable[..., Any])


def private_override(base: type, why: str) -> Callable[[F], F]:
    """Mark a method that overrides a private method of ``base``; refuse at import if ``base`` lost it.

    An override of a method the base class no longer has is silently never called: this makes
    it an import-time ``CompatError`` naming the method instead. ``why`` says why no public hook serves.

    Example:
        >>> class Base:
        ...     def _hook(self): ...
        >>> class Mine(Base):
        ...     @private_override(Base, "no public hook")
        ...     def _hook(self): ...
    """

    def check(method: F) -> F:
        if not callable(getattr(base, method.__name__, None)):
            raise CompatError(f"{base.__module__}.{base.__qualname__}.{method.__name__} no longer exists; flashdist overrides it ({why}).")
        return method

    return check


def should_accumulate(trainer: Any) -> bool:
    """Whether the current micro-batch only accumulates (no optimizer step after it).

    Relies on ``FitLoop._should_accumulate()``: the loop's own decision, epoch end included;
    no public API exposes it, and recomputing it would be a second rule that could disagree.
    """
    return trainer.fit_loop._should_accumulate()


def skip_per_step_sigterm_broadcast(trainer: Any) -> None:
    """Stop Lightning's blocking SIGTERM broadcast at every training step of a multi-process fit.

    Relies on ``_TrainingEpochLoop.advance`` calling ``self._broadcast_sigterm_tensor()`` at each
    step when ``world_size > 1`` (Lightning 2.6): a ``torch.distributed.broadcast`` of
    ``trainer.received_sigterm`` plus an ``.item()``, so every rank waits for rank 0 at every
    step. Only for a fit whose SIGTERM flashdist's preemption handles: Lightning's handler then
    never sets ``received_sigterm``, the broadcast only ever carries 0, and flashdist's own
    non-blocking vote (every ~0.2 s) stops all ranks together. No public switch turns it off.
    Tested by ``test_the_epoch_loop_broadcasts_sigterm_each_step_through_one_method``.
    """
    loop = trainer.fit_loop.epoch_loop
    if not callable(getattr(loop, "_broadcast_sigterm_tensor", None)):
        raise CompatError("lightning's training epoch loop has no _broadcast_sigterm_tensor any more.")
    loop._broadcast_sigterm_tensor = _no_sigterm_broadcast


def _no_sigterm_broadcast() -> None:
    return None


def loggers_write_this_step(trainer: Any) -> bool:
    """Whether Lightning sends this training step's ``on_step`` logged values to the loggers.

    Relies on ``_LoggerConnector.should_update_logs`` (every ``log_every_n_steps`` optimizer
    steps, counted by ``_batches_that_stepped``, or when stopping), which
    ``update_train_step_metrics`` consults right after ``on_train_batch_end``; ``fast_dev_run``
    writes every step. No public API exposes the decision, and recomputing it from
    ``global_step`` would be a second rule that could disagree. Tested by
    ``test_loggers_write_this_step_is_the_logger_connectors_decision``.
    """
    return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)


def mark_checkpoint_saved_at(checkpoint: Any, step: int, path: str) -> None:
    """Tell a ``ModelCheckpoint`` that ``path`` holds a checkpoint of ``step``, so it does not save again.

    Relies on ``ModelCheckpoint._last_global_step_saved`` and ``_last_checkpoint_saved``, which
    its own saves set; there is no public way to report a save made outside it (flashdist's
    preemption checkpoint). The second matters with ``save_last=True``: Lightning (2.6) writes
    ``last.ckpt`` in ``on_train_end`` when it has saved nothing itself, i.e. after the loop has
    ended, and a resume from that file takes the interrupted epoch as finished (its remaining
    batches were skipped, and with one epoch the resumed run ended at once). Being the newest
    checkpoint, ``ckpt_path="auto"`` would pick it over the preemption checkpoint.
    """
    checkpoint._last_global_step_saved = step
    checkpoint._last_checkpoint_saved = str(path)


def validation_loader_defined(trainer: Any) -> bool:
    """Whether the fit has a validation loader (known before the loop runs).

    Relies on ``_EvaluationLoop._data_source.is_defined()``: before the loop's own setup, the
    public ``trainer.val_dataloaders`` is still None even when a loader was given.
    """
    return trainer.fit_loop.epoch_loop.val_loop._data_source.is_defined()


def set_optimizer_steps_done(trainer: Any, steps: int) -> None:
    """Set the optimizer steps Lightning counts as done (``trainer.global_step``) after a restore.

    Relies on the progress tracker under ``epoch_loop.automatic_optimization.optim_progress``,
    which ``global_step`` reads; ``global_step`` itself has no setter.
    """
    progress = trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total
    progress.ready = progress.completed = steps


def batches_done_in_epoch(trainer: Any) -> int:
    """Micro-batches this rank has finished in the current epoch.

    Relies on ``epoch_loop.batch_progress.current.processed`` (``trainer.fit_loop`` progress
    trackers, documented only as internals); no public counter of the epoch's batches exists.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def add_batches_done(trainer: Any, batches: int) -> None:
    """Count ``batches`` more micro-batches as done in the current epoch (a resume on another topology).

    Relies on the same ``batch_progress`` trackers as :func:`batches_done_in_epoch`: Lightning
    resumes the epoch from them, and offers no public way to move them.
    """
    progress = trainer.fit_loop.epoch_loop.batch_progress
    for counter in (progress.current, progress.total):
        counter.ready += batches
        counter.started += batches
        counter.processed += batches
        counter.completed += batches


def kill_launched_ranks(strategy: Any, signum: int) -> bool:
    """Kill the rank processes Lightning's launcher started from this process; False if it started none.

    Relies on ``_SubprocessScriptLauncher.procs`` (a private class): the launcher kills its
    children itself only on Ctrl-C, and exposes no public list of them.
    """
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(strategy, "launcher", None)
    if not isinstance(launcher, _SubprocessScriptLauncher) or not launcher.procs:
        return False
    launcher.kill(signum)
    return True


def adopt_subclass(obj: Any, subclass: type) -> None:
    """Turn a user's strategy object into an instance of ``subclass``, keeping its state and settings.

    Relies on Lightning's strategies keeping their state in the instance ``__dict__`` (no
    ``__slots__``) and on ``subclass`` adding methods only (no ``__init__``, empty slots in mixins):
    re-creating the object would need every constructor argument, which Lightning does not keep.
    """
    base = type(obj)
    added = subclass.__mro__[: subclass.__mro__.index(base)] if base in subclass.__mro__ else None
    if added is None or any("__init__" in vars(c) or tuple(vars(c).get("__slots__", ())) for c in added):
        raise CompatError(f"{subclass.__qualname__} must add methods only to adopt a {base.__qualname__}.")
    obj.__class__ = subclass


@contextlib.contextmanager
def configure_model_counts_as_overridden(module: Any) -> Iterator[None]:
    """Make Lightning believe ``module`` overrides ``configure_model`` while the block runs.

    Relies on ``ModelParallelStrategy.setup`` checking ``is_overridden("configure_model", module)``,
    which reads the instance attribute: flashdist shards the module itself (FSDP2Strategy), and
    the strategy has no public switch for "already parallelized".
    """
    module.configure_model = _already_parallelized
    try:
        yield
    finally:
        del module.configure_model


def _already_parallelized() -> None:
    """Stands in for a user's ``configure_model`` (see :func:`configure_model_counts_as_overridden`)."""


def set_parallel_sizes(strategy: Any, data_parallel: int, tensor_parallel: int) -> None:
    """Set ``ModelParallelStrategy``'s mesh sizes once the number of nodes and processes is known.

    Relies on ``_data_parallel_size`` / ``_tensor_parallel_size``, read by its ``setup_environment``;
    the constructor takes them, but before the Trainer has told the strategy its process count.
    """
    strategy._data_parallel_size = data_parallel
    strategy._tensor_parallel_size = tensor_parallel


def launched_by_srun(environ: Any) -> bool:
    """Lightning's rule for "this process was started by srun" (``SLURMEnvironment.detect``), on ``environ``.

    Copied from ``lightning.fabric.plugins.environments.slurm._is_srun_used``: srun sets
    ``SLURM_NTASKS``, and jobs named ``bash`` or ``interactive`` opt out. Lightning's version
    reads ``os.environ`` only (and warns when srun is installed but unused); flashdist checks
    a launcher's environment before any process reads it.
    """
    return "SLURM_NTASKS" in environ and environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def process_group_settings(strategy: Any) -> tuple[str | None, Any]:
    """The process-group backend and timeout a Lightning DDP-family strategy would initialize with.

    Relies on ``_get_process_group_backend()`` and ``_timeout`` (DDPStrategy, DeepSpeedStrategy):
    flashdist forms the group itself on a torchrun restart, and Lightning exposes neither.
    """
    get_backend = getattr(strategy, "_get_process_group_backend", None)
    return (get_backend() if callable(get_backend) else None), getattr(strategy, "_timeout", None)


def init_deepspeed_distributed(strategy: Any) -> None:
    """Form DeepSpeed's process group the way ``DeepSpeedStrategy`` does.

    Relies on ``DeepSpeedStrategy._init_deepspeed_distributed``: the CPU strategy skips only the
    CUDA device checks of ``setup_distributed`` around it, and there is no public entry point.
    DeepSpeed's announcement of its CPU shared-memory op is dropped (compat/deepspeed.py).
    """
    from flashdist.compat.deepspeed import shm_op_announcement_dropped

    with shm_op_announcement_dropped():
        strategy._init_deepspeed_distributed()


def reinstall_after_lightning_signal_handlers(trainer: Any, install: Callable[[], None]) -> None:
    """Call ``install`` right after Lightning registers its signal handlers in every fit.

    Relies on: ``Trainer._signal_connector.register_signal_handlers()`` being called by
    ``Trainer._run`` after the checkpoint restore and before the sanity check, and composing a
    SIGTERM handler whose notifier kills the launched ranks and sets ``received_sigterm``, on
    which the loops raise ``SIGTERMException`` — a ``SystemExit`` without a code, so a preempted
    process exits 0 with no checkpoint. No public option turns the notifier off; flashdist's own
    handler (runtime/preemption.py) must be the only one from then on.
    """
    connector = trainer._signal_connector
    register = connector.register_signal_handlers

    def register_then_install() -> None:
        register()
        install()

    connector.register_signal_handlers = register_then_install


def record_loaded_checkpoint_path(trainer: Any, path: str) -> None:
    """Make ``trainer.ckpt_path`` name the checkpoint really loaded (an older one after a fallback).

    Relies on: ``trainer.ckpt_path`` reading ``trainer._checkpoint_connector._ckpt_path``, which
    ``resume_start`` sets to the path it was given just before calling ``strategy.load_checkpoint``.
    The public setter also marks the path user-managed, which changes the next ``fit``'s
    path selection.
    """
    trainer._checkpoint_connector._ckpt_path = path


def route_checkpoint_load(strategy: Any, load: Callable[..., Any]) -> None:
    """Make Lightning's checkpoint restore call ``load(original, checkpoint_path, *args, **kwargs)``.

    Relies on: ``_CheckpointConnector.resume_start`` reading every checkpoint of ``fit``,
    ``validate``, ``test`` and ``predict`` through ``trainer.strategy.load_checkpoint(path)``, looked
    up on the instance (so an instance attribute takes precedence over the class's method).
    No public API sees the path before anything is read: the ``CheckpointIO`` plugin is bypassed
    by DeepSpeed (its engine loads the shards) and by FSDP2's sharded load (DCP), and
    ``on_load_checkpoint`` hooks run after the unpickling. ``original`` is always the class's
    method, so routing again (a new fit) replaces the previous routing instead of nesting it.
    Tested by ``test_every_restore_reads_the_checkpoint_through_strategy_load_checkpoint``.
    """
    original = type(strategy).load_checkpoint.__get__(strategy)
    strategy.load_checkpoint = functools.partial(load, original)


def distributed_sampler_injected(trainer: Any) -> bool:
    """Whether Lightning will replace a plain sampler with a ``DistributedSampler`` (decidable before launch).

    Relies on ``_AcceleratorConnector.use_distributed_sampler`` and ``.is_distributed``, the two
    settings ``_DataConnector._requires_distributed_sampler`` reads (Lightning 2.6); the
    Trainer's ``use_distributed_sampler=`` argument is not kept as a public attribute. Needed
    to plan steps in the launching process, before Lightning has prepared any loader.
    """
    connector = trainer._accelerator_connector
    return bool(connector.use_distributed_sampler and connector.is_distributed)


def route_train_sampler(trainer: Any, make: Callable[..., Any]) -> None:
    """Give the training loader ``make(loader, num_replicas=, rank=)``'s sampler where Lightning prepares it.

    Relies on ``_DataConnector._prepare_dataloader(dataloader, shuffle, mode)``, looked up on
    the instance, being where Lightning injects its ``DistributedSampler`` (Lightning 2.6), before
    ``fit_loop.setup_data`` creates the epoch's iterator (with ``num_workers > 0`` that iterator
    already draws indices, so a sampler swapped later, at ``on_train_start``, comes too late), and
    on ``lightning.pytorch.utilities.data._update_dataloader`` rebuilding a loader around a sampler.
    Lightning passes ``shuffle=True`` for every training loader (``_process_dataloader``; Lightning
    #10170) and wraps a custom sampler in a reshuffling ``DistributedSamplerWrapper``: no public
    setting keeps the user's order (``use_distributed_sampler=False`` turns off sharding as well).
    Where Lightning injects, ``make`` gets ``trainer.distributed_sampler_kwargs``; on one process
    (``use_distributed_sampler`` on, a map-style loader with a plain ``BatchSampler``) it gets one
    replica, and may return None to leave the loader as it is. Other stages are unchanged, and the
    user's loader is rebuilt, never changed. Tested by
    ``test_route_train_sampler_replaces_lightnings_injected_training_sampler``.
    """
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader, has_iterable_dataset
    from torch.utils.data import BatchSampler, DataLoader

    connector = trainer._data_connector
    accelerator = trainer._accelerator_connector
    original = type(connector)._prepare_dataloader.__get__(connector)

    def prepare_dataloader(dataloader: Any, shuffle: bool, mode: Any) -> Any:
        if mode != RunningStage.TRAINING or not isinstance(dataloader, DataLoader):
            return original(dataloader, shuffle, mode)
        if connector._requires_distributed_sampler(dataloader):
            sampler = make(dataloader, **(trainer.distributed_sampler_kwargs or {}))
        elif (accelerator.use_distributed_sampler and not accelerator.is_distributed
              and type(dataloader.batch_sampler) is BatchSampler and not has_iterable_dataset(dataloader)):
            sampler = make(dataloader, num_replicas=1, rank=0)
        else:
            sampler = None
        return original(dataloader, shuffle, mode) if sampler is None else _update_dataloader(dataloader, sampler, mode=mode)

    connector._prepare_dataloader = prepare_dataloader


def train_data_set_up(trainer: Any) -> bool:
    """Whether the fit loop has set up its train data (``_FitLoop._combined_loader``; Lightning 2.6).

    See :func:`release_train_data`. Tested by ``test_train_data_released_after_planning_is_set_up_again_after_the_restore``.
    """
    return trainer.fit_loop._combined_loader is not None


def release_train_data(trainer: Any) -> None:
    """Undo a train-data set-up made before the checkpoint restore, so that the fit loop makes it again after it.

    flashdist plans from the prepared train loader (``fit_loop.setup_data()``, as
    ``trainer.estimated_stepping_batches`` does) inside ``configure_optimizers``, which Lightning
    calls in ``strategy.setup``: before it restores the loops (the epoch, a ``StatefulDataLoader``'s
    state) and, under DeepSpeed and FSDP, the callbacks (the epoch position). A loader and iterator
    made then are made too early: ``setup_data`` returns at once afterwards while ``_combined_loader``
    is set, so a stateful loader's saved state is never loaded (Lightning #20550), and with
    ``num_workers > 0`` the iterator has already drawn the first epoch's indices. Relies on that early
    return and on ``_data_fetcher.teardown()`` shutting the iterator's workers down (``CombinedLoader.reset``),
    as ``_FitLoop.teardown`` does. Tested by ``test_train_data_released_after_planning_is_set_up_again_after_the_restore``.
    """
    loop = trainer.fit_loop
    if loop._data_fetcher is not None:
        loop._data_fetcher.teardown()
        loop._data_fetcher = None
    loop._combined_loader = None


def keep_loader_states_of_trained_batches(trainer: Any) -> bool:
    """Make the training fit loop able to report its stateful loaders' states as of the batches it trained.

    Lightning saves ``CombinedLoader._state_dicts()`` (each ``_Stateful`` loader's ``state_dict()``,
    as torchdata's ``StatefulDataLoader`` has) at the checkpoint. For a loader without a length its
    ``_PrefetchDataFetcher`` has by then fetched one batch more than it trained (to know whether the
    one it trains is the last), so the saved state is one batch ahead and a resume skips that batch
    (measured: killed after step 7 of an endless stream, resumed from step 6, its batch 7 never
    trained). This gives the fetcher a subclass that records the loaders' states before each fetch
    (:func:`loader_states_of_trained_batches` reads them); only where it prefetches (no length) and a
    loader has state. Relies on ``_PrefetchDataFetcher`` fetching through ``super().__next__()``
    (``_DataFetcher.__next__``) in ``__iter__`` and ``__next__``, keeping the fetched-but-untrained
    batches in ``.batches``, and on ``fit_loop._data_fetcher`` / ``_combined_loader`` (Lightning 2.6).
    Returns whether it applies. Tested by ``test_the_prefetching_fetcher_reports_loader_states_of_trained_batches``.
    """
    from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher

    fetcher, combined = trainer.fit_loop._data_fetcher, trainer.fit_loop._combined_loader
    if type(fetcher) is _states_before_each_fetch_class():
        return True
    prefetches = type(fetcher) is _PrefetchDataFetcher and fetcher.length is None and fetcher.prefetch_batches > 0
    if not prefetches or combined is None:
        return False
    if not combined._state_dicts():
        return False
    fetcher.states_before_fetch = []
    fetcher.__class__ = _states_before_each_fetch_class()
    return True


def loader_states_of_trained_batches(trainer: Any) -> list[dict[str, Any]] | None:
    """The stateful loaders' states after the batches trained so far; None where Lightning's own are right."""
    fetcher = trainer.fit_loop._data_fetcher
    if type(fetcher) is not _states_before_each_fetch_class() or not fetcher.batches:
        return None  # nothing fetched ahead: the loaders' own states are those of the trained batches
    states = fetcher.states_before_fetch
    return states[-len(fetcher.batches)] if len(states) >= len(fetcher.batches) else None


def save_loader_states(checkpoint: dict[str, Any], states: list[dict[str, Any]]) -> None:
    """Put ``states`` where Lightning saved the fit loop's loader states (``loops.fit_loop.state_dict.combined_loader``)."""
    checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] = states


@functools.cache
def _states_before_each_fetch_class() -> type:
    from lightning.pytorch.loops.fetchers import _DataFetcher, _PrefetchDataFetcher

    class _RecordStates(_DataFetcher):
        def __next__(self) -> Any:  # _PrefetchDataFetcher's super().__next__() lands here: one real fetch
            self.states_before_fetch = [*self.states_before_fetch[-self.prefetch_batches:], self.combined_loader._state_dicts()]
            return super().__next__()

    class StatesBeforeEachFetch(_PrefetchDataFetcher, _RecordStates):
        """Lightning's prefetching fetcher, plus the stateful loaders' states before each fetch."""

    return StatesBeforeEachFetch


def dcp_metadata_filename() -> str:
    """The file in an FSDP2 (DCP) checkpoint directory that holds Lightning's non-tensor state.

    Relies on: ``ModelParallelStrategy.save_checkpoint`` writing ``torch.save(rest, path /
    _METADATA_FILENAME)`` beside DCP's shards, and its load reading that name back. flashdist's
    asynchronous FSDP2 save writes it the same way (runtime/async_checkpoint.py). Tested by
    ``test_fsdp2_checkpoint_metadata_file_is_lightnings_meta_pt``.
    """
    from lightning.fabric.utilities.load import _METADATA_FILENAME

    return _METADATA_FILENAME


def peek_training_batches(trainer: Any, count: int) -> list[Any]:
    """The next ``count`` batches the training loop will run (fewer at the epoch's end), as the loader yields them, left for the loop.

    Relies on ``FitLoop._data_fetcher`` (Lightning 2.6) being a ``_PrefetchDataFetcher`` that hands
    the loop first the ``(batch, batch_idx, dataloader_idx)`` tuples in its ``batches`` list (its own
    prefetch, for a loader without a length), then ``next(iterator)`` (the ``CombinedLoader``'s
    iterator, made anew by every ``iter(fetcher)`` at an epoch start), and on its ``fetched`` /
    ``done`` counting the batches it hands out, not the ones read from ``iterator``. Batches read
    here are put back in front of ``iterator``, so the loop trains on the same batches in the same
    order and ends the epoch where it would have. What the loop has processed (the count a resume
    positions the sampler from, flashdist.runtime.resume_steps) is unchanged. No public API lets a
    ``training_step`` see the batches after its own (the token-weighted loss counts the learned
    tokens of its accumulation window before the first backward). Tested by
    ``test_peek_training_batches_returns_what_the_loop_trains_next_and_changes_nothing``.
    """
    from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher

    fetcher = trainer.fit_loop._data_fetcher
    if not isinstance(fetcher, _PrefetchDataFetcher) or fetcher.iterator is None:
        raise CompatError(f"the training loop's data fetcher is {type(fetcher).__name__}, not the prefetching fetcher flashdist reads ahead in.")
    held = [item[0] for item in fetcher.batches[:count]]
    pulled: list[Any] = []
    exhausted = False
    while len(held) + len(pulled) < count:
        try:
            pulled.append(next(fetcher.iterator))
        except StopIteration:
            exhausted = True
            break
    if pulled or exhausted:
        fetcher.iterator = _put_back(pulled, None if exhausted else fetcher.iterator)
    return held + [item[0] for item in pulled]


def _put_back(items: list[Any], iterator: Iterator[Any] | None) -> Iterator[Any]:
    """``items``, then what ``iterator`` yields next. Not ``itertools.chain``: it calls ``iter()`` on
    ``iterator``, and ``iter()`` of Lightning's ``CombinedLoader`` starts the epoch over."""
    yield from items
    while iterator is not None:
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item
