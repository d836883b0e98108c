"""The pipeline's stages, one small class each, in the order they run:

JoinProfiles  -> pairs x users x products, one row per (pair, channel, variant)
RenderPrompts -> chat messages from the channel's versioned template
build_generate_stage -> vLLM through Ray Data's LLM processor (the engine seam)
QualityGate   -> verdict (accepted / review / rejected) and reasons per row
RenderRepair  -> a rejected row's chat with the reasons fed back, for one more draw
FinalizeRows  -> the published output schema
WriteParquetFiles -> deterministic file names, routed per sink
"""

from factory.stages.finalize import FinalizeRows
from factory.stages.gate import QualityGate
from factory.stages.generate import build_generate_stage
from factory.stages.join import JoinProfiles
from factory.stages.render import RenderPrompts, RenderRepair
from factory.stages.write import WriteParquetFiles

__all__ = [
    "JoinProfiles",
    "RenderPrompts",
    "build_generate_stage",
    "QualityGate",
    "RenderRepair",
    "FinalizeRows",
    "WriteParquetFiles",
]
