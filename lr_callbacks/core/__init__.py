"""What the three callbacks share, and knows none of them.

- :mod:`~lr_callbacks.core.lr_model`: the LR model ``lr(g, k) = peak(g) × schedule(k) × scale(g)``: reading and
  writing a group's LR (tensor-safe), rescaling the user's torch schedulers, and the protocols through which the
  finder and the watchdog reach the schedule callback (set the peak, set the scale, pause and resume);
- :mod:`~lr_callbacks.core.durations`, :mod:`~lr_callbacks.core.checks`: durations with their unit, argument
  checks whose errors name the fix (pure, stdlib only);
- :mod:`~lr_callbacks.core.snapshot`: host-memory snapshots of the model, the optimizer and the RNGs, restored in
  place; :mod:`~lr_callbacks.core.grads`: the global gradient norm;
- :mod:`~lr_callbacks.core.logs`, :mod:`~lr_callbacks.core.plot`: TensorBoard scalars, images and text; curves;
- :mod:`~lr_callbacks.core.compat`: the Lightning/torch compatibility layer, where every private third-party
  internal the package touches lives.
"""
