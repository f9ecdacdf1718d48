"""Training recipes that use the analysis layers (probes, circuits) to evaluate what they
train. They sit above :mod:`interp.models` (which only builds, trains, saves and loads) and
above :mod:`interp.probes` / :mod:`interp.circuits`.

- :mod:`interp.recipes.toy_induction`: the toy induction model (and its 1-layer control),
  its recipe stored with the checkpoint, and :func:`~interp.recipes.toy_induction.circuit_toy`.
"""
