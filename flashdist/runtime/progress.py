"""Lightning's rich progress bar with the run's version shown as what it is, an integer.

Lightning's ``RichProgressBar`` formats every number in the bar with ``.3f``: the logger's version
(``v_num``) read ``v_num: 0.000``. ``flashdist.Trainer`` uses this bar where Lightning would use
its rich one (no progress bar of the user's, rich installed, the bar not turned off).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """``RichProgressBar`` whose ``v_num`` is shown as the integer it is.

    Example:
        >>> isinstance(ProgressBar(), RichProgressBar)
        True
    """

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if isinstance(items.get("v_num"), int):
            items["v_num"] = str(items["v_num"])  # a str is shown as it is; a number as 0.000
        return items


def default_progress_bar(callbacks: list[Any], enable_progress_bar: bool | None) -> ProgressBar | None:
    """The bar to add where Lightning would add its rich one; None where the user chose (or Lightning would not)."""
    from lightning.pytorch.callbacks import ProgressBar as AnyProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    if enable_progress_bar is False or not _RICH_AVAILABLE or any(isinstance(c, AnyProgressBar) for c in callbacks):
        return None
    return ProgressBar()
