"""The simulation backend's models: simulated objective values and delays, without torch or onnxruntime.

A simulated value is a deterministic function of the architecture's spec, the objective, the budget and a
seed: latency from an analytic cost model (:mod:`facenas.sim.cost`), IOU from a saturating learning curve
in the budget (:mod:`facenas.sim.curve`), each with seeded noise; an evaluation takes a configurable delay
(:mod:`facenas.sim.delay`). :class:`facenas.workers.sim.SimBackend` serves them as objectives, labelled
``simulated`` under target keys of their own (``sim:...``), so they never mix with measured results.
"""

#: Changes with any constant of the models: results of another version never share a target key.
MODEL_VERSION = "v1"
