"""``LRSchedule`` and the pure schedules it follows.

Pure (stdlib only): :mod:`~lr_callbacks.schedule.shapes`, :mod:`~lr_callbacks.schedule.composites`,
:mod:`~lr_callbacks.schedule.presets`, :mod:`~lr_callbacks.schedule.transformers` (transformers' names);
:mod:`~lr_callbacks.schedule.plan` evaluates a schedule over a run (key steps, table, image). The Lightning side:
:mod:`~lr_callbacks.schedule.setup` (the fit-start resolution and checks) and
:mod:`~lr_callbacks.schedule.callback` (the callback).
"""
