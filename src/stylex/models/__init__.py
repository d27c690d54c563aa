"""Networks: generator (mapping / styles / synthesis), encoder, class-conditional discriminator, StyleSpace."""

from stylex.models.discriminator import Discriminator
from stylex.models.encoder import Encoder
from stylex.models.generator import Generator, SynthesisState
from stylex.models.stylespace import StyleCoord, StyleLayout, StyleVector

__all__ = ["Discriminator", "Encoder", "Generator", "StyleCoord", "StyleLayout", "StyleVector", "SynthesisState"]
