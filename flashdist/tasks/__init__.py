"""The user-facing tasks: :class:`~flashdist.tasks.model.Task` and what is built on it."""
