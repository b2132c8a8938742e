"""The ``hgnet`` (Stacked Hourglass) search space: parameters, architecture files, archids, sampling."""

from facenas.space.archfile import dump_arch_json, load_arch_document, parse_arch_document
from facenas.space.hgnet import Arch, HgnetSearchSpace, ParamRange
from facenas.space.params import SearchSpaceParams, load_search_space_params
from facenas.space.spec import ArchSpec, DownBlock, HourglassSpec

__all__ = [
    "Arch",
    "ArchSpec",
    "DownBlock",
    "HgnetSearchSpace",
    "HourglassSpec",
    "ParamRange",
    "SearchSpaceParams",
    "dump_arch_json",
    "load_arch_document",
    "load_search_space_params",
    "parse_arch_document",
]
