"""The runtime around a fit: the Trainer, planning, the ledger, resume, checkpoints, preemption, the report."""
