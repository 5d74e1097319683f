"""One callback base class for both Lightning namespaces.

Lightning ships twice: ``pytorch_lightning`` and ``lightning.pytorch`` (the unified ``lightning``
package). Their ``Callback`` classes are distinct, and a Trainer (and LightningCLI) from one namespace
does not accept a callback built on the other. Our callbacks derive from both bases where both are
installed, so they work, and pass Lightning's ``isinstance`` checks, whichever namespace the user imports.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

__all__ = ["Callback", "callback_bases"]


def callback_bases() -> tuple[type, ...]:
    """The installed Lightning ``Callback`` classes: ``pytorch_lightning``'s, then ``lightning.pytorch``'s."""
    bases: list[type] = []
    if importlib.util.find_spec("pytorch_lightning") is not None:
        from pytorch_lightning import Callback as PLCallback

        bases.append(PLCallback)
    if importlib.util.find_spec("lightning") is not None:
        from lightning.pytorch import Callback as LCallback

        bases.append(LCallback)
    if not bases:
        raise ImportError("lr_callbacks needs PyTorch Lightning: pip install pytorch-lightning")
    return tuple(bases)


if TYPE_CHECKING:
    from pytorch_lightning import Callback
else:
    _bases = callback_bases()
    Callback = _bases[0] if len(_bases) == 1 else type("Callback", _bases, {"__module__": __name__})
