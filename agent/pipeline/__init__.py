"""The glue between the stages: the typed chains and positions the composition root builds
from the settings (:mod:`agent.pipeline.parts`), and the functions one tick and the commands
run over them."""
