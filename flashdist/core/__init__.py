"""Former home of the tasks and the runtime, kept so that earlier imports still work.

The tasks live in :mod:`flashdist.tasks`, the runtime around a fit in :mod:`flashdist.runtime`.
"""
