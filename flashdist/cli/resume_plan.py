"""``flashdist plan --resume-from CKPT``: a dry run of a resume, launching nothing.

Reads the checkpoint's manifest (JSON: files, the saved schedule identity and position), so
verification and the saved identity need no torch; every file is hashed, as one process
resuming it would. Then the new launch's plan, and what each ``resume_policy`` would do with
it — the same :func:`flashdist.runtime.resume.decide` a fit calls (imported only here: it
lives with the Lightning callback, so this path imports Lightning; a plain ``flashdist plan``
does not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flashdist.errors import ConfigError


def resume_report(checkpoint: str, settings: dict[str, Any], plan_report: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Verification, saved identity, the new plan and each policy's decision, as one dict.

    ``settings`` are ``flashdist plan``'s (the new launch); devices, nodes, batch size and
    accumulation default to the saved ones.
    """
    from flashdist.runtime.global_batch import accumulation_for, saved_batch
    from flashdist.runtime.manifest import read_manifest
    from flashdist.runtime.trust import verify

    path = Path(checkpoint)
    failures = verify(path, rank=0, world_size=1)
    try:
        manifest = read_manifest(path)
    except ValueError:
        manifest = None
    report: dict[str, Any] = {
        "checkpoint": str(path),
        "verified": not failures,
        "verification_failures": [str(f) for f in failures],
    }
    state = manifest.resume_state if manifest is not None else {}
    if not state.get("identity"):
        report["saved_identity"] = None
        report["decisions"] = {}
        return report
    identity, schedule = state["identity"], state["schedule"]
    position = manifest.global_step or 0
    report.update(saved_identity=identity, saved_schedule=schedule, saved_global_step=position)
    saved_global, saved_dp, saved_micro = saved_batch(state)
    settings = dict(settings)
    settings.setdefault("batch_size", saved_micro)
    if settings.get("devices") is None and settings.get("num_nodes") is None:
        settings["devices"] = saved_dp
    settings.setdefault("accumulate_grad_batches", identity["accumulate_grad_batches"])
    if settings.get("dataset_size") is None:
        raise ConfigError(
            "flashdist plan --resume-from needs --dataset-size (or a --config with the data section): "
            "a checkpoint records the schedule, not the dataset.",
        )
    new_plan = plan_report(**settings)
    report["new_plan"] = new_plan
    decisions: dict[str, Any] = {}
    from flashdist.runtime.resume import RESUME_POLICIES

    for policy in RESUME_POLICIES:
        plan = new_plan
        try:
            if policy == "keep_global_batch":
                dp = plan["data_parallel_size"]
                accumulation = accumulation_for(saved_global, dp, settings["batch_size"])
                plan = plan_report(**{**settings, "accumulate_grad_batches": accumulation})
            decisions[policy] = _decision(identity, schedule, plan, policy, position)
        except ConfigError as error:
            decisions[policy] = {"refused": str(error)}
    report["decisions"] = decisions
    return report


def _decision(identity: dict[str, Any], schedule: dict[str, Any], plan: dict[str, Any], policy: str, position: int) -> dict[str, Any]:
    from dataclasses import replace

    from flashdist.runtime.resume import ExecutingSchedule, ScheduleIdentity, decide

    saved = ScheduleIdentity(**identity)
    saved_schedule = ExecutingSchedule(
        total_steps=schedule["total_steps"],
        step_args=tuple((str(k), int(v)) for k, v in schedule["step_args"]),
        global_batch_size=schedule["global_batch_size"],
        update_offset=schedule.get("update_offset", 0),
        policy=schedule.get("policy"),
    )
    warmup = plan["planned_warmup_steps"] if plan["planned_warmup_steps"] is not None else _scaled_warmup(saved, plan)
    current = replace(
        saved,
        planned_total_steps=plan["planned_total_steps"],
        warmup_steps=warmup,
        global_batch_size=plan["global_batch_size"],
        data_parallel_size=plan["data_parallel_size"],
        accumulate_grad_batches=plan["accumulate_grad_batches"],
    )
    built = ExecutingSchedule(plan["planned_total_steps"], saved_schedule.step_args, plan["global_batch_size"])
    decision = decide(saved, saved_schedule, current, built, policy, position)  # type: ignore[arg-type]
    return {
        "changes": list(decision.changes),
        "accumulate_grad_batches": plan["accumulate_grad_batches"],
        "position": decision.position,
        "total_steps": decision.schedule.total_steps,
        "step_args": dict(decision.schedule.step_args),
        "planned_updates": decision.schedule.planned_updates,
    }


def _scaled_warmup(saved: Any, plan: dict[str, Any]) -> int | None:
    """Without --warmup: the saved warmup as the same fraction of the new total (how a fraction resolves)."""
    if saved.warmup_steps is None or not saved.planned_total_steps:
        return None
    import math

    return math.ceil(saved.warmup_steps * plan["planned_total_steps"] / saved.planned_total_steps)


def resume_text(report: dict[str, Any], plan_text: Callable[[dict[str, Any]], str]) -> str:
    lines = [f"checkpoint          {report['checkpoint']}"]
    if report["verified"]:
        lines.append("verification        OK (every file's size and SHA-256 match the manifest)")
    else:
        lines.append("verification        FAILED: " + "; ".join(report["verification_failures"]))
    identity = report.get("saved_identity")
    if identity is None:
        lines.append("saved identity      none (no flashdist manifest): a fit loads it only with trust_unverified_checkpoints=True")
        return "\n".join(lines)
    lines.append(f"saved at step       {report['saved_global_step']} of {report['saved_schedule']['total_steps']}")
    lines += [f"  saved {k:<24} {v}" for k, v in identity.items()]
    lines += ["", "new plan:", plan_text(report["new_plan"]), "", "resume_policy decisions:"]
    for policy, decision in report["decisions"].items():
        if "refused" in decision:
            lines.append(f"  {policy:<18} refused: {decision['refused']}")
            continue
        args = ", ".join(f"{k}={v}" for k, v in decision["step_args"].items())
        lines.append(
            f"  {policy:<18} continue at step {decision['position']} of {decision['total_steps']} ({args}); "
            f"accumulate_grad_batches={decision['accumulate_grad_batches']}; {decision['planned_updates']} updates in all"
            + (f"; changes: {'; '.join(decision['changes'])}" if decision["changes"] else "; nothing changed")
        )
    return "\n".join(lines)
