"""The one door to the internals of flashdist's dependencies: one module per dependency.

Every private attribute, private method override or copied piece of code of Lightning,
DeepSpeed, torch or jsonargparse that flashdist relies on goes through
``flashdist.compat.<dependency>``: one small function per assumption, with a line saying what
it relies on and why no public API serves, and a test in ``tests/compat/test_<dependency>.py``
named after the assumption, so that an upgrade that breaks one fails that test by name.
"""


class CompatError(RuntimeError):
    """An installed dependency no longer has an internal flashdist relies on (see flashdist/compat)."""
