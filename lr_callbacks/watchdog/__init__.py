"""``DivergenceWatchdog``: judges each optimizer step before its update and answers trouble.

Pure: :mod:`~lr_callbacks.watchdog.config` (the arguments, ``Incident`` and its ``Signal``/``Action``),
:mod:`~lr_callbacks.watchdog.stats` (robust statistics, the outlier gate) and :mod:`~lr_callbacks.watchdog.policy`
(the ladder: skip, clip, lower, roll back, halt). The torch side: :mod:`~lr_callbacks.watchdog.device` (a step's
signals, judging on the device, skipping and clipping); :mod:`~lr_callbacks.watchdog.samples` (the optional
per-sample losses a module reports); :mod:`~lr_callbacks.watchdog.callback` (the callback).
"""
