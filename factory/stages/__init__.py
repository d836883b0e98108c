"""The pipeline's stages, one small class each, in the order they run:

    JoinProfiles  -> pairs x users x products, one row per (pair, channel, variant)
    RenderPrompts -> chat messages from the channel's versioned template
    build_generate_stage -> vLLM through Ray Data's LLM processor (the engine seam)
    FinalizeRows  -> the published output schema
"""

from factory.stages.finalize import FinalizeRows
from factory.stages.generate import build_generate_stage
from factory.stages.join import JoinProfiles
from factory.stages.render import RenderPrompts

__all__ = ["JoinProfiles", "RenderPrompts", "build_generate_stage", "FinalizeRows"]
