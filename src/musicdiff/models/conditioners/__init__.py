"""Conditioners: text (T5, CLAP, sentence encoder, lookup table), timing numbers, and the ConditionerSet."""

from musicdiff.models.conditioners.base import Conditioner
from musicdiff.models.conditioners.clap import CLAPTextConditioner
from musicdiff.models.conditioners.conditioner_set import ConditionerSet
from musicdiff.models.conditioners.lut import LUTConditioner
from musicdiff.models.conditioners.number import NumberConditioner
from musicdiff.models.conditioners.sentence import SentenceConditioner
from musicdiff.models.conditioners.t5 import T5Conditioner

__all__ = [
    "CLAPTextConditioner",
    "Conditioner",
    "ConditionerSet",
    "LUTConditioner",
    "NumberConditioner",
    "SentenceConditioner",
    "T5Conditioner",
]
