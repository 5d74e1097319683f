"""``LRFinder`` and ``find_lr``: an LR range test inside the user's own trainer.

Pure: :mod:`~lr_callbacks.finder.ramp` (the swept LRs, the stop rule), :mod:`~lr_callbacks.finder.analysis`
(the curve's reading), :mod:`~lr_callbacks.finder.result` (what the user gets). The Lightning side:
:mod:`~lr_callbacks.finder.driver` (training and validation steps driven outside Lightning's loops),
:mod:`~lr_callbacks.finder.trials` (confirm mode) and :mod:`~lr_callbacks.finder.callback` (the callback and the
function form).
"""
